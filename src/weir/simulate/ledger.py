"""The ground-truth ledger of a simulator run: every record the sink acknowledged, and its fate.

Layout, under ``<infra.state_dir>/ledgers/<run_id>/``:

* ``run.json`` — the run: its stream spec (seed, start, devices, interval, fault mix), sink and
  target, status (``running | completed | interrupted | failed``), counts by fate and reason;
* ``records-NNNNN.parquet`` — one row per acknowledged record (:data:`LEDGER_SCHEMA`);
* ``failed.jsonl`` — records the sink gave up on (never acknowledged), with the error.

Every file appears atomically (written aside, then renamed), so a reader never sees half a
part, and a run stopped by Ctrl-C leaves a ledger equal to what the sink acknowledged.

A record's fate is what the contract (DESIGN.md §4) will make of it:

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
from datetime import datetime, timezone
from itertools import count, repeat
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from weir.simulate.stream import SimRecord

VALID = "valid"
QUARANTINE = "quarantine"
DUPLICATE = "duplicate"
CONFLICTING_DUPLICATE = "conflicting_duplicate"
FATES = (VALID, QUARANTINE, DUPLICATE, CONFLICTING_DUPLICATE)

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

    def __init__(self, folder: Path, manifest: dict[str, Any], rows_per_part: int = 250_000):
        self.folder = folder
        self.manifest = dict(manifest)
        self.rows_per_part = rows_per_part
        folder.mkdir(parents=True, exist_ok=False)
        self._rows: list[tuple] = []
        self._parts = 0
        self._written = 0
        self.failed_count = 0
        self._failures: list[dict] = []
        self._fates: Counter = Counter()
        self._reasons: Counter = Counter()
        self._faults: Counter = Counter()
        # event_id -> [winning seq or None, winning variant, copies resolved]
        self._groups: dict[str, list] = {}
        self.manifest.update(status=RUNNING, started_at=_now())
        write_json(folder / MANIFEST, self.manifest)

    # --- called by sinks ------------------------------------------------------------------------
    def acknowledged(self, record: SimRecord, partition: Any, offset: Any) -> None:
        """The sink confirmed ``record`` at ``partition``/``offset``."""
        self._rows.append((record, partition, offset))
        if len(self._rows) >= self.rows_per_part:
            self.flush()

    def acknowledged_many(self, rows: list[tuple[SimRecord, Any, Any]]) -> None:
        """Several ``(record, partition, offset)`` confirmations, in the order they came."""
        self._rows.extend(rows)
        if len(self._rows) >= self.rows_per_part:
            self.flush()

    def acknowledged_lines(self, records: list[SimRecord], path: str) -> None:
        """The sink confirmed a file holding ``records`` as its lines 1, 2, …"""
        self.acknowledged_many(list(zip(records, repeat(path), count(1))))

    def _resolve_copy(self, record: SimRecord) -> Optional[tuple[str, int]]:
        """The first acknowledged copy of an event is valid; a later one duplicates it.

        Called in acknowledgement order (rows are resolved when written, in the order they
        were acknowledged; a failure only means "never acknowledged", whenever it came).
        Returns (fate, seq of the winner) for a losing copy, None for the winner.
        """
        entry = self._groups.get(record.event_id)
        if entry is None:
            self._groups[record.event_id] = [record.seq, record.variant, 1]
            return None
        entry[2] += 1
        if entry[2] >= 2:
            del self._groups[record.event_id]  # an original and its one copy: settled
        if entry[0] is None:  # the earlier copies all failed: this one is first
            entry[0], entry[1] = record.seq, record.variant
            return None
        fate = DUPLICATE if record.variant == entry[1] else CONFLICTING_DUPLICATE
        return fate, entry[0]

    @property
    def acknowledged_count(self) -> int:
        return self._written + len(self._rows)

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
        rows, self._rows = self._rows, []
        if not rows:
            return
        records, partitions, offsets = zip(*rows)
        seqs, _, keys, payloads, event_ids, times, faults, reasons, groups, _ = zip(*records)
        fates = [VALID if reason is None else QUARANTINE for reason in reasons]
        duplicate_of: list = [None] * len(rows)
        for index in [i for i, group in enumerate(groups) if group]:
            lost = self._resolve_copy(records[index])
            if lost is not None:
                fates[index], duplicate_of[index] = lost
        table = pa.table(
            {
                "seq": pa.array(seqs, pa.int64()),
                "event_id": pa.array(event_ids, pa.string()),
                "key": pa.array(keys, pa.string()),
                "event_time": pa.array(times, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                "fault": pa.array(faults, pa.string()),
                "fate": pa.array(fates, pa.string()),
                "reason": pa.array(reasons, pa.string()),
                "duplicate_of": pa.array(duplicate_of, pa.int64()),
                "partition": _texts(partitions),
                "offset": _texts(offsets),
                "payload_crc32": pa.array(list(map(zlib.crc32, payloads)), pa.int64()),
            },
            schema=LEDGER_SCHEMA,
        )
        target = self.folder / PART_PATTERN.format(self._parts)
        _write_atomically(target, lambda p: pq.write_table(table, p, compression="snappy"))
        self._parts += 1
        self._written += len(rows)
        self._fates.update(fates)
        self._reasons.update(r for r in reasons if r is not None)
        self._faults.update(faults)

    def close(self, status: str, **summary: Any) -> dict[str, Any]:
        """Write what is left and the final run.json; returns the manifest."""
        self.flush()
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


def _texts(values: tuple) -> pa.Array:
    """Coordinates as text: Kafka's integers are converted by Arrow, not one by one."""
    if all(type(v) is int for v in values):
        return pa.array(values, pa.int64()).cast(pa.string())
    return pa.array([v if type(v) is str else str(v) for v in values], pa.string())


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


def latest_run(state_dir: str) -> Optional[Path]:
    """The most recently started run's ledger folder (run ids sort by start time)."""
    root = ledger_root(state_dir)
    runs = sorted(p for p in root.glob("*") if (p / MANIFEST).exists()) if root.exists() else []
    return runs[-1] if runs else None
