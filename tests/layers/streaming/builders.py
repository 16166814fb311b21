"""Lakes, landing files, tables and stream processes for the streaming tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import yaml
from chispa import assert_approx_df_equality
from pyspark.sql import DataFrame, SparkSession

from weir.config import FilesSourceConfig, LakeConfig, TimingConfig, WeirConfig
from weir.contract import aggregate_minutes, classify_records, dedup_first_received, valid_events
from weir.delta import table_version
from weir.infra.process import wait_until
from weir.lake import LakeLayout, local_path
from weir.schemas import (
    LAYER_SPEED,
    MINUTE_SCHEMA,
    RAW_SCHEMA,
)
from weir.simulate.ledger import read_ledger

UTC = timezone.utc


PROJECT_ROOT = Path(__file__).resolve().parents[3]


WEIR = Path(sys.executable).parent / "weir"


VIEW_COLUMNS = [f.name for f in MINUTE_SCHEMA.fields if f.name != "computed_at"]


# --- helpers ----------------------------------------------------------------------------------


def lake_config(base: WeirConfig, root: Path, **timing: int) -> WeirConfig:
    """``base`` with its own lake under ``root`` and its own state folder beside it (a
    subprocess's metastore or a simulator's ledgers stay private); the files source takes one
    file per batch."""
    return base.model_copy(
        update={
            "lake": LakeConfig(root=str(root)),
            "sources": base.sources.model_copy(
                update={"files": FilesSourceConfig(max_files_per_trigger=1)}
            ),
            "timing": TimingConfig(**{**base.timing.model_dump(), **timing}),
            "infra": base.infra.model_copy(update={"state_dir": str(root.parent / "state")}),
        }
    )


def land(config: WeirConfig, name: str, lines: list[str], modified: datetime) -> Path:
    """A JSON-lines file landed the way writers must: a hidden name, then a rename."""
    folder = Path(local_path(LakeLayout.from_config(config).landing))
    target = folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{target.name}.partial"
    partial.write_text("\n".join(lines) + "\n", "utf-8")
    os.utime(partial, (modified.timestamp(), modified.timestamp()))
    partial.replace(target)
    return target


def table(spark: SparkSession, path: str) -> DataFrame:
    return spark.read.format("delta").load(path)


def speed_view(spark: SparkSession, lake: LakeLayout) -> DataFrame:
    """SPEED as every reader sees it: the newest version of each window."""
    from weir.speed_table import read_speed

    return read_speed(spark, lake.speed)


def version(spark: SparkSession, path: str) -> int:
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, path).history(1).first()["version"]


def versions(spark: SparkSession, lake: LakeLayout) -> dict[str, int]:
    return {p: version(spark, p) for p in (lake.raw, lake.quarantine, lake.speed)}


def raw_lines(spark: SparkSession, lake: LakeLayout) -> list[tuple[str, str, str]]:
    """RAW as (file, line number, payload), sorted; duplicates would show twice."""
    return sorted(
        (r.source_partition, r.source_offset, r.payload)
        for r in table(spark, lake.raw)
        .select("source_partition", "source_offset", "payload")
        .collect()
    )


def raw_count(spark: SparkSession, lake: LakeLayout) -> int:
    """Rows in RAW so far; 0 while another process has not created the table yet."""
    if table_version(spark, lake.raw) is None:
        return 0
    return table(spark, lake.raw).count()


def raw_commits(lake: LakeLayout) -> int:
    """How many commits RAW's Delta log holds (-1 before the table exists): a file listing,
    cheap enough to poll while a stream process needs the CPU."""
    log = Path(local_path(lake.raw)) / "_delta_log"
    if not log.is_dir():
        return -1
    return sum(1 for p in log.iterdir() if p.name.endswith(".json") and p.name[:20].isdigit())


def expected_lines(files: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    return sorted(
        (name, str(number), line)
        for name, lines in files.items()
        for number, line in enumerate(lines, start=1)
    )


def batch_view(raw: DataFrame) -> DataFrame:
    """The batch layer's computation on the same RAW rows, as the speed layer labels it."""
    events = raw.transform(classify_records).transform(valid_events).transform(dedup_first_received)
    return aggregate_minutes(events, LAYER_SPEED, datetime(2000, 1, 1, tzinfo=UTC))


def assert_speed_equals_batch(spark: SparkSession, lake: LakeLayout) -> None:
    expected = batch_view(table(spark, lake.raw)).select(*VIEW_COLUMNS)
    actual = speed_view(spark, lake).select(*VIEW_COLUMNS)
    # Averages summed in another order (state merged across micro-batches) differ in the
    # last bits of a double.
    assert_approx_df_equality(actual, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)


def assert_raw_is_valid_plus_quarantine(spark: SparkSession, lake: LakeLayout) -> None:
    raw = table(spark, lake.raw)
    valid = raw.transform(classify_records).transform(valid_events).count()
    assert raw.count() == valid + table(spark, lake.quarantine).count()


def assert_quarantine_shares_raw_ingest_time(spark: SparkSession, lake: LakeLayout) -> None:
    keys = ["source_partition", "source_offset", "ingest_time"]
    quarantine = table(spark, lake.quarantine).select(*keys)
    assert quarantine.join(table(spark, lake.raw).select(*keys), keys, "left_anti").count() == 0


def split_conflicting_duplicate(sample: list[tuple[str, Optional[str]]]) -> tuple[list, str]:
    """The mixed sample without its conflicting duplicate (a retry with other content), and it.

    Copies of one event in the same micro-batch may win in any order in the speed layer; the
    test lands the conflicting copy in a later file, where first-received is unambiguous.
    """
    conflicting = next(
        payload
        for payload, reason in sample
        if reason is None and json.loads(payload).get("temperature_c") == 99.9
    )
    rest = [item for item in sample if item[0] != conflicting]
    return rest, conflicting


def event(event_id: str, device: str, moment: datetime, temperature: float) -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "device_id": device,
            "event_time": moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "temperature_c": temperature,
            "lat": 37.5,
            "status": "driving",
        }
    )


# --- the checkpoint guard and the Delta log reader, without a stream -----------------------------


def raw_rows(spark: SparkSession, count: int) -> DataFrame:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    rows = [
        ("files", "landing", "a.jsonl", str(n), None, "{}", None, now, now.date(), None)
        for n in range(1, count + 1)
    ]
    return spark.createDataFrame(rows, RAW_SCHEMA)


def progress_report(query: str, batch: int, second: int, rows: int) -> dict[str, Any]:
    return {
        "id": f"id-{query}",
        "runId": "run-1",
        "name": query,
        "timestamp": f"2026-03-01T12:00:{second:02d}.000Z",
        "batchId": batch,
        "numInputRows": rows,
        "sources": [{"description": "FileStreamSource"}],
    }


def write_conf(config: WeirConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.model_dump()), "utf-8")
    return path


class StreamProcess:
    """`weir stream` in its own process group (a kill reaches its JVM too), logging to a file."""

    def __init__(
        self,
        config: WeirConfig,
        folder: Path,
        source: str,
        env: Optional[dict[str, str]] = None,
    ) -> None:
        conf = write_conf(config, folder / "stream.yaml")
        self.log_path = folder / f"stream-{uuid.uuid4().hex[:6]}.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [str(WEIR), "stream", "--conf", str(conf), "--source", source],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
                start_new_session=True,
                env={
                    **{k: v for k, v in os.environ.items() if not k.startswith("WEIR__")},
                    **(env or {}),
                },
            )

    @property
    def output(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    def wait_for(self, condition: Any, what: str, interval: float = 0.2) -> Any:
        """Wait for ``condition`` while the stream runs; fail at once, with its log, if it exits."""

        def running_and(*_: object) -> Any:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"weir stream exited with {self.process.returncode} before {what}:\n"
                    + self.output[-4000:]
                )
            return condition()

        return wait_until(running_and, timeout=300, what=what, interval=interval)

    def kill(self) -> None:
        """SIGKILL to the driver and its JVM at once: a crash at whatever moment this is."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)


def logged_batches(lake: LakeLayout, query_name: str, log: str) -> set[int]:
    """Batch ids in a query's checkpoint ``offsets`` (planned) or ``commits`` (done) log."""
    folder = Path(local_path(lake.checkpoint(query_name))) / log
    return {int(p.name) for p in folder.iterdir() if p.name.isdigit()} if folder.is_dir() else set()


def batch_in_flight(lake: LakeLayout, query_name: str) -> Optional[int]:
    """The newest micro-batch a query has planned but not committed, if any."""
    pending = logged_batches(lake, query_name, "offsets") - committed_batches(lake, query_name)
    return max(pending) if pending else None


def committed_batches(lake: LakeLayout, query_name: str) -> set[int]:
    return logged_batches(lake, query_name, "commits")


# --- Kafka ------------------------------------------------------------------------------------


def kafka_topic(config: WeirConfig, partitions: int = 2) -> WeirConfig:
    """A fresh topic of its own (the shared one may hold other tests' records)."""
    from weir.infra.kafka import create_topic

    name = create_topic(
        config.sources.kafka.bootstrap_servers, f"telemetry-{uuid.uuid4().hex[:8]}", partitions, 30
    )
    kafka = config.sources.kafka.model_copy(update={"topic": name, "partitions": partitions})
    return config.model_copy(update={"sources": config.sources.model_copy(update={"kafka": kafka})})


def ledger_records(ledger_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The simulator's ledger by Kafka (partition, offset)."""
    rows = read_ledger(ledger_dir).to_pylist()
    records = {(row["partition"], row["offset"]): row for row in rows}
    assert len(records) == len(rows), "the ledger names a Kafka record twice"
    return records


def assert_raw_and_quarantine_match_the_ledger(
    spark: SparkSession, lake: LakeLayout, ledger: dict[tuple[str, str], dict[str, Any]]
) -> None:
    """RAW holds every acknowledged record once, as sent; QUARANTINE exactly the ledger's
    invalid records, each with its reason; raw = valid + quarantine."""
    import zlib

    raw = (
        table(spark, lake.raw)
        .select("source_partition", "source_offset", "payload", "payload_bytes")
        .collect()
    )
    archived = Counter((r.source_partition, r.source_offset) for r in raw)
    assert [c for c, n in archived.items() if n > 1] == [], "records archived twice"
    assert set(archived) - set(ledger) == set(), "records nobody sent"
    assert set(ledger) - set(archived) == set(), "records lost"
    # The bytes as sent: RAW keeps them in payload_bytes when they are not UTF-8.
    changed = [
        (r.source_partition, r.source_offset)
        for r in raw
        if zlib.crc32(bytes(r.payload_bytes) if r.payload_bytes is not None else r.payload.encode())
        != ledger[(r.source_partition, r.source_offset)]["payload_crc32"]
    ]
    assert changed == [], "payloads not archived as sent"

    quarantined = {
        (r.source_partition, r.source_offset): r.reason
        for r in table(spark, lake.quarantine)
        .select("source_partition", "source_offset", "reason")
        .collect()
    }
    expected = {c: row["reason"] for c, row in ledger.items() if row["fate"] == "quarantine"}
    assert quarantined == expected
    assert_raw_is_valid_plus_quarantine(spark, lake)


def produce(config: WeirConfig, first: int, count: int) -> None:
    """``count`` valid events to the configured topic, every one acknowledged."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": config.sources.kafka.bootstrap_servers})
    failures: list[str] = []
    now = datetime.now(UTC)
    for n in range(first, first + count):
        device = f"vehicle-{n % 5:03d}"
        producer.produce(
            config.sources.kafka.topic,
            event(f"k-{n}", device, now - timedelta(seconds=n % 50), 20.0),
            key=device,
            on_delivery=lambda error, _: failures.append(str(error)) if error else None,
        )
    assert producer.flush(60) == 0
    assert failures == []


def wait_stream_active(client: Any, stream: str, what: Optional[str] = None) -> None:
    """Wait until the Kinesis ``stream`` is ACTIVE (created, or done resharding)."""
    wait_until(
        lambda: (
            client.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"][
                "StreamStatus"
            ]
            == "ACTIVE"
        ),
        timeout=30,
        what=what or f"stream {stream} active",
    )
