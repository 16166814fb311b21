"""The ground-truth ledger of a simulator run: every record the sink acknowledged, and its fate.

Layout, under ``<infra.state_dir>/ledgers/<run_id>/``:

* ``run.json`` — the run: its stream spec (seed, start, devices, interval, fault mix), sink and
  target, status (``running | completed | interrupted | failed``), counts by fate and reason;
* ``records-NNNNN.parquet`` — one row per acknowledged record (:data:`LEDGER_SCHEMA`);
* ``failed.jsonl`` — records the sink gave up on (never acknowledged), with the error.

Every file appears atomically (written aside, then renamed), so a reader never sees half a
part, and a run stopped by Ctrl-C leaves a ledger equal to what the sink acknowledged.

A record's fate is what the contract (docs/contract.md, "Classification") will make of it:

* ``valid`` — a valid event, the first received copy of its event_id;
* ``quarantine`` — with ``reason`` exactly as ``weir.contract.classify_records`` assigns it;
* ``duplicate`` — a valid copy of an event received earlier with the same content;
* ``conflicting_duplicate`` — a valid copy whose content differs from the first copy's.

For the last two, ``duplicate_of`` is the seq of the copy that wins. Which copy is first is
decided by acknowledgement order: every copy of an event has the same key, hence the same
Kafka partition, Kinesis shard or landing file, where acknowledgement order is position order.
"""

from __future__ import annotations

import json
import os
import zlib
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from itertools import chain, compress, repeat
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from weir.simulate.stream import Batch, SimRecord

VALID = "valid"
QUARANTINE = "quarantine"
DUPLICATE = "duplicate"
CONFLICTING_DUPLICATE = "conflicting_duplicate"
FATES = (VALID, QUARANTINE, DUPLICATE, CONFLICTING_DUPLICATE)
_FATE_CODES = {fate: code for code, fate in enumerate(FATES)}
_FATE_TEXTS = pa.array(FATES, pa.string())

RUNNING, COMPLETED, INTERRUPTED, FAILED = "running", "completed", "interrupted", "failed"

MANIFEST = "run.json"
FAILED_FILE = "failed.jsonl"
PART_PATTERN = "records-{:05d}.parquet"

LEDGER_SCHEMA = pa.schema(
    [
        pa.field("seq", pa.int64(), nullable=False),  # position in the generated stream
        pa.field("event_id", pa.string()),  # as the payload carries it
        pa.field("key", pa.string(), nullable=False),  # sending device: Kafka key / partition key
        pa.field("event_time", pa.timestamp("us", tz="UTC")),  # the instant the payload claims
        pa.field("fault", pa.string(), nullable=False),  # weir.simulate.faults kind or "none"
        pa.field("fate", pa.string(), nullable=False),
        pa.field("reason", pa.string()),  # the quarantine reason, for fate = quarantine
        pa.field("duplicate_of", pa.int64()),  # seq of the winning copy, for duplicates
        pa.field("partition", pa.string(), nullable=False),  # partition | shard id | file
        pa.field("offset", pa.string(), nullable=False),  # offset | sequence no. | line no.
        pa.field("payload_crc32", pa.int64(), nullable=False),  # zlib.crc32 of the bytes sent
    ]
)


# The columns kept for rows not written yet (payloads only as their CRC32).
_PENDING = (
    "seq",
    "key",
    "payload_crc32",
    "event_id",
    "event_time",
    "fault",
    "reason",
    "group",
    "variant",
    "partition",
    "offset",
)
_DICTIONARY_COLUMNS = ["key", "fault", "fate", "reason", "partition"]
_STATISTICS_COLUMNS = ["seq", "event_time", "duplicate_of", "payload_crc32"]
_NUMERIC_ARGS = (0, 2, 9, 10)  # acknowledged_batch's columns that may be integer arrays


def ledger_root(state_dir: str) -> Path:
    return Path(state_dir) / "ledgers"


def _write_atomically(target: Path, write) -> None:
    partial = target.with_name(f".{target.name}.partial")
    write(partial)
    os.replace(partial, target)


def write_json(target: Path, document: dict) -> None:
    _write_atomically(
        target, lambda p: p.write_text(json.dumps(document, indent=2, default=str) + "\n", "utf-8")
    )


class Ledger:
    """Records acknowledgements as they come; fates of copies follow acknowledgement order."""

    def __init__(
        self,
        folder: Path,
        manifest: dict[str, Any],
        rows_per_part: int = 250_000,
        background_writes: bool = False,
    ):
        self.folder = folder
        self.background_writes = background_writes
        self.manifest = dict(manifest)
        self.rows_per_part = rows_per_part
        folder.mkdir(parents=True, exist_ok=False)
        # Acknowledged rows not written yet, column by column, in acknowledgement order.
        self._columns: dict[str, list] = {name: [] for name in _PENDING}
        self._pending = 0
        self._parts = 0
        self._written = 0
        self.failed_count = 0
        self._failures: list[dict] = []
        self._fates: Counter = Counter()
        self._reasons: Counter = Counter()
        self._faults: Counter = Counter()
        # event_id -> [winning seq or None, winning variant, copies resolved]
        self._groups: dict[str, list] = {}
        # With background_writes, parts are encoded and written by one thread (pyarrow lets
        # go of the GIL meanwhile) while the run goes on; close() waits for them.
        self._writer: Optional[ThreadPoolExecutor] = None
        self._writes: list[Future] = []
        self.manifest.update(status=RUNNING, started_at=_now())
        write_json(folder / MANIFEST, self.manifest)
        # pyarrow's first conversion of a Python list imports pandas (a noticeable pause): now,
        # rather than in the middle of the run when the first part is written.
        pa.array([None], pa.string())

    # --- called by sinks ------------------------------------------------------------------------
    def acknowledged(self, record: SimRecord, partition: Any, offset: Any) -> None:
        """The sink confirmed ``record`` at ``partition``/``offset``."""
        self.acknowledged_many([(record, partition, offset)])

    def acknowledged_many(self, rows: list[tuple[SimRecord, Any, Any]]) -> None:
        """Several ``(record, partition, offset)`` confirmations, in the order they came."""
        if not rows:
            return
        records, partitions, offsets = zip(*rows)
        seqs, _, keys, payloads, event_ids, times, faults, reasons, groups, variants = zip(*records)
        self._append(
            seqs,
            keys,
            list(map(zlib.crc32, payloads)),
            event_ids,
            times,
            faults,
            reasons,
            groups,
            variants,
            partitions,
            offsets,
        )

    def acknowledged_lines(self, records: list[SimRecord], path: str) -> None:
        """The sink confirmed a file holding ``records`` as its lines 1, 2, …"""
        self.acknowledged_batch(Batch.of(records), path, range(1, len(records) + 1))

    def acknowledged_batch(
        self, batch: Batch, partitions: Any, offsets: Any, acked: Optional[list] = None
    ) -> None:
        """A batch's records confirmed, in batch order: ``partitions`` one per record (or one
        for all, a str), ``offsets`` one per record; ``acked`` (a bool per record), if given,
        leaves out those whose flag is false (the sink reports them otherwise)."""
        n = len(batch)
        if isinstance(partitions, str):
            partitions = repeat(partitions, n)
        columns = (
            batch.seqs,
            batch.keys,
            batch.crc32s(),
            *batch.record_columns(),
            partitions,
            offsets,
        )
        if acked is not None and not all(acked):
            mask = np.array(acked, dtype=bool)
            columns = tuple(
                _numbers(column)[mask]
                if index in _NUMERIC_ARGS and _numeric(column)
                else list(compress(column, acked))
                for index, column in enumerate(columns)
            )
        self._append(*columns)

    def _append(self, seqs, keys, crc32s, *rest) -> None:
        """One more run of acknowledged rows: seqs and CRCs are kept as chunks of numpy
        arrays (Arrow takes them whole), partitions and offsets as chunks too (arrays where
        they are integers), the rest as lists."""
        columns = self._columns
        chunk = _numbers(seqs)
        columns["seq"].append(chunk)
        columns["key"].extend(keys)
        columns["payload_crc32"].append(_numbers(crc32s))
        for name, values in zip(_PENDING[3:], rest):
            if name in ("partition", "offset"):
                columns[name].append(_numbers(values) if _numeric(values) else list(values))
            else:
                columns[name].extend(values)
        self._pending += len(chunk)
        if self._pending >= self.rows_per_part:
            self.flush()

    def _resolve_copy(self, event_id: str, seq: int, variant: int) -> Optional[tuple[str, int]]:
        """The first acknowledged copy of an event is valid; a later one duplicates it.

        Called in acknowledgement order (rows are resolved when written, in the order they
        were acknowledged; a failure only means "never acknowledged", whenever it came).
        Returns (fate, seq of the winner) for a losing copy, None for the winner.
        """
        entry = self._groups.get(event_id)
        if entry is None:
            self._groups[event_id] = [seq, variant, 1]
            return None
        entry[2] += 1
        if entry[2] >= 2:
            del self._groups[event_id]  # an original and its one copy: settled
        if entry[0] is None:  # the earlier copies all failed: this one is first
            entry[0], entry[1] = seq, variant
            return None
        fate = DUPLICATE if variant == entry[1] else CONFLICTING_DUPLICATE
        return fate, entry[0]

    @property
    def acknowledged_count(self) -> int:
        return self._written + self._pending

    @property
    def confirmed(self) -> int:
        """Records the sink has settled: acknowledged or given up on."""
        return self.acknowledged_count + self.failed_count

    def failed(self, record: SimRecord, error: str) -> None:
        """The sink gave up on ``record``: reported, never silently lost."""
        self.failed_count += 1
        if record.group:
            entry = self._groups.setdefault(record.event_id, [None, None, 0])
            entry[2] += 1
            if entry[2] >= 2:
                del self._groups[record.event_id]
        self._failures.append(
            {
                "seq": record.seq,
                "event_id": record.event_id,
                "key": record.key,
                "fault": record.fault,
                "error": error,
            }
        )

    # --- writing ---------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write the acknowledged rows so far as one more Parquet part (atomically)."""
        if not self._pending:
            return
        c, self._columns = self._columns, {name: [] for name in _PENDING}
        rows, self._pending = self._pending, 0
        reasons = pa.array(c["reason"], pa.string())
        # Fates as codes into FATES (valid, else quarantine where a reason is given), and the
        # winners' seqs: arrays, not a Python object per row.
        fates = reasons.is_valid().to_numpy(zero_copy_only=False).astype(np.int8)
        duplicate_of = np.zeros(rows, dtype=np.int64)
        copies = np.zeros(rows, dtype=bool)
        event_ids, variants = c["event_id"], c["variant"]
        seqs = np.concatenate(c["seq"])
        for index in compress(range(rows), c["group"]):
            lost = self._resolve_copy(event_ids[index], int(seqs[index]), variants[index])
            if lost is not None:
                fates[index] = _FATE_CODES[lost[0]]
                duplicate_of[index] = lost[1]
                copies[index] = True
        table = pa.Table.from_arrays(
            [
                pa.array(seqs, pa.int64()),
                pa.array(event_ids, pa.string()),
                pa.array(c["key"], pa.string()),
                pa.array(c["event_time"], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                pa.array(c["fault"], pa.string()),
                pa.DictionaryArray.from_arrays(fates, _FATE_TEXTS).cast(pa.string()),
                reasons,
                pa.array(duplicate_of, pa.int64(), mask=~copies),
                _texts(c["partition"]),
                _texts(c["offset"]),
                pa.array(np.concatenate(c["payload_crc32"]), pa.int64()),
            ],
            schema=LEDGER_SCHEMA,
        )
        for counter, name in ((self._fates, "fate"), (self._faults, "fault")):
            counter.update(_value_counts(table.column(name)))
        self._reasons.update(_value_counts(table.column("reason")))
        target = self.folder / PART_PATTERN.format(self._parts)
        if not self.background_writes:
            _write_part(target, table)
        else:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="weir-ledger")
            for write in self._writes:  # one part in flight at most: memory stays bounded
                write.result()
            self._writes = [self._writer.submit(_write_part, target, table)]
        self._parts += 1
        self._written += rows

    def _wait_for_writes(self) -> None:
        writes, self._writes = self._writes, []
        for write in writes:
            write.result()  # a failed write raises here
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None

    def close(self, status: str, **summary: Any) -> dict[str, Any]:
        """Write what is left and the final run.json; returns the manifest."""
        self.flush()
        self._wait_for_writes()
        if self._failures:
            _write_atomically(
                self.folder / FAILED_FILE,
                lambda p: p.write_text(
                    "".join(json.dumps(f) + "\n" for f in self._failures), "utf-8"
                ),
            )
        self.manifest.update(
            status=status,
            finished_at=_now(),
            acknowledged=self.acknowledged_count,
            failed=self.failed_count,
            fates=dict(sorted(self._fates.items())),
            reasons=dict(sorted(self._reasons.items())),
            faults=dict(sorted(self._faults.items())),
            **summary,
        )
        write_json(self.folder / MANIFEST, self.manifest)
        return self.manifest


def _numeric(values: Any) -> bool:
    return isinstance(values, (np.ndarray, range))


def _numbers(values: Any) -> np.ndarray:
    """Integers as an int64 array (a range without a Python int per value)."""
    if isinstance(values, range):
        return np.arange(values.start, values.stop, values.step, dtype=np.int64)
    return np.asarray(values, dtype=np.int64)


def _texts(chunks: list) -> pa.Array:
    """Coordinates as text: integers (Kafka's, line numbers) are converted by Arrow."""
    if all(isinstance(chunk, np.ndarray) for chunk in chunks):
        return pa.array(np.concatenate(chunks), pa.int64()).cast(pa.string())
    values = list(
        chain.from_iterable(c.tolist() if isinstance(c, np.ndarray) else c for c in chunks)
    )
    try:
        return pa.array(values, pa.int64()).cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        pass
    try:
        return pa.array(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return pa.array([v if type(v) is str else str(v) for v in values], pa.string())


def _value_counts(column: pa.ChunkedArray) -> dict[str, int]:
    """Non-null values of a string column and how often each occurs."""
    counts = pc.value_counts(column.drop_null())
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))


def _write_part(target: Path, table: pa.Table) -> None:
    # Dictionary encoding only where values repeat (the others cost more than they save);
    # min/max statistics only for the numbers: those of the text columns were a quarter of
    # writing a part, and nothing prunes parts by an id's or an offset's text.
    _write_atomically(
        target,
        lambda p: pq.write_table(
            table,
            p,
            compression="snappy",
            use_dictionary=_DICTIONARY_COLUMNS,
            write_statistics=_STATISTICS_COLUMNS,
        ),
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- reading -------------------------------------------------------------------------------------
def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / MANIFEST).read_text("utf-8"))


def read_ledger(folder: Path) -> pa.Table:
    """Every acknowledged record of a run, ordered by seq."""
    parts = sorted(Path(folder).glob("records-*.parquet"))
    if not parts:
        return LEDGER_SCHEMA.empty_table()
    table = pa.concat_tables([pq.read_table(p, schema=LEDGER_SCHEMA) for p in parts])
    return table.sort_by("seq")


def read_failures(folder: Path) -> list[dict]:
    path = Path(folder) / FAILED_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line]
