"""`weir stream`: the raw archiver and the speed layer, exactly once (docs/streaming.md).

Streaming tests are scripts of actions and checks (STYLE.md §4): land or produce records,
process what is available, check the tables, stop or crash, add more, restart, check that
nothing was lost or repeated. Every wait is a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import pytest
import yaml
from chispa import assert_df_equality
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.cli import main
from weir.config import ConfigError, FilesSourceConfig, LakeConfig, TimingConfig, WeirConfig
from weir.contract import aggregate_minutes, classify_records, dedup_first_received, valid_events
from weir.contract.rules import Reason
from weir.errors import EXIT_BAD_CONFIG, EXIT_RUNTIME_FAILURE, WeirError
from weir.infra.process import wait_until
from weir.lake import LakeLayout, local_path
from weir.layers.checkpoints import (
    QueryWriters,
    committed_transactions,
    epoch_of,
    guard_checkpoint,
    read_epoch,
)
from weir.layers.progress import progress_line, progress_row
from weir.layers.raw import RawArchiver, append_once
from weir.layers.streaming import ensure_table, error_summary, run_stream
from weir.sample import mixed_sample
from weir.schemas import (
    LAYER_SPEED,
    MINUTE_SCHEMA,
    RAW_PARTITION_COLUMNS,
    RAW_SCHEMA,
)

UTC = timezone.utc
PROJECT_ROOT = Path(__file__).resolve().parents[2]
WEIR = Path(sys.executable).parent / "weir"
VIEW_COLUMNS = [f.name for f in MINUTE_SCHEMA.fields if f.name != "computed_at"]


# --- helpers ----------------------------------------------------------------------------------


def lake_config(base: WeirConfig, root: Path, **timing: int) -> WeirConfig:
    """``base`` with its own lake under ``root``; the files source takes one file per batch."""
    return base.model_copy(
        update={
            "lake": LakeConfig(root=str(root)),
            "sources": base.sources.model_copy(
                update={"files": FilesSourceConfig(max_files_per_trigger=1)}
            ),
            "timing": TimingConfig(**{**base.timing.model_dump(), **timing}),
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
    from delta.tables import DeltaTable

    try:
        return table(spark, lake.raw).count() if DeltaTable.isDeltaTable(spark, lake.raw) else 0
    except AnalysisException:  # created but not committed yet
        return 0


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
    actual = table(spark, lake.speed).select(*VIEW_COLUMNS)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


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


# --- the files source end to end --------------------------------------------------------------


@pytest.mark.slow
def test_files_stream_archives_every_line_once_across_restarts(
    spark: SparkSession, weir_config: WeirConfig, tmp_path: Path
) -> None:
    config = lake_config(weir_config, tmp_path / "lake")
    lake = LakeLayout.from_config(config)
    now = datetime.now(UTC).replace(microsecond=0)
    sample, conflicting = split_conflicting_duplicate(mixed_sample(30, seed=11, now=now))
    first = [payload for payload, _ in sample]
    first.insert(len(first) // 2, "")  # a blank line in the middle is a record
    second = [
        conflicting,
        event("late-1", "vehicle-000", now - timedelta(minutes=3), 20.5),
        event("late-2", "vehicle-new", now - timedelta(minutes=2), 21.0),
        "not json at all",
    ]
    files = {"2026/a.jsonl": first, "b.jsonl": second}
    land(config, "2026/a.jsonl", first, now - timedelta(seconds=60))
    land(config, "b.jsonl", second, now - timedelta(seconds=30))
    land(config, "ignored.txt", ["not a .jsonl file"], now)

    result = run_stream(spark, config, "files", available_now=True)

    assert result.last_batch["raw-files"] == 1  # two files, one per micro-batch
    assert raw_lines(spark, lake) == expected_lines(files)
    raw = table(spark, lake.raw)
    row = raw.where("source_offset = '1'").orderBy("source_partition").first()
    assert (row.source, row.source_stream, row.record_key) == ("files", lake.landing, None)
    assert row.arrival_time is not None
    # One ingest time per micro-batch, and the files source took one file per batch.
    per_file = {
        r.source_partition: r.times
        for r in raw.groupBy("source_partition")
        .agg(F.collect_set("ingest_time").alias("times"))
        .collect()
    }
    assert len(per_file["2026/a.jsonl"]) == len(per_file["b.jsonl"]) == 1
    assert per_file["2026/a.jsonl"][0] < per_file["b.jsonl"][0]

    reasons = Counter(r.reason for r in table(spark, lake.quarantine).select("reason").collect())
    expected_reasons = Counter(reason for _, reason in sample if reason is not None)
    expected_reasons[Reason.MALFORMED_JSON] += 2  # the blank line and "not json at all"
    assert reasons == expected_reasons
    assert_raw_is_valid_plus_quarantine(spark, lake)
    assert_quarantine_shares_raw_ingest_time(spark, lake)
    assert_speed_equals_batch(spark, lake)
    progress = table(spark, lake.stream_progress)
    assert {r.query_name for r in progress.select("query_name").distinct().collect()} == {
        "raw-files",
        "speed-files",
    }

    # Restart with a new file: only the new lines are added.
    third = [event("late-3", "vehicle-000", now - timedelta(minutes=1), 22.0), "{}"]
    files["c.jsonl"] = third
    land(config, "c.jsonl", third, now)
    run_stream(spark, config, "files", available_now=True)
    assert raw_lines(spark, lake) == expected_lines(files)
    assert_raw_is_valid_plus_quarantine(spark, lake)
    assert_speed_equals_batch(spark, lake)

    # Restart with nothing new: no commit anywhere.
    before = versions(spark, lake)
    run_stream(spark, config, "files", available_now=True)
    assert versions(spark, lake) == before


@pytest.mark.slow
def test_crash_after_a_write_replays_the_batch_without_duplicates(
    spark: SparkSession,
    weir_config: WeirConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = lake_config(weir_config, tmp_path / "lake")
    lake = LakeLayout.from_config(config)
    now = datetime.now(UTC).replace(microsecond=0)
    files = {"a.jsonl": [payload for payload, _ in mixed_sample(6, seed=5, now=now)]}
    land(config, "a.jsonl", files["a.jsonl"], now - timedelta(seconds=30))

    # 1. Crash after the RAW append, before the quarantine append and the checkpoint commit.
    original_append_quarantine = RawArchiver.append_quarantine

    def crash_instead(self: RawArchiver, quarantine: DataFrame, batch_id: int) -> None:
        raise RuntimeError("simulated crash after the raw append")

    monkeypatch.setattr(RawArchiver, "append_quarantine", crash_instead)
    with pytest.raises(WeirError, match="raw-files failed"):
        run_stream(spark, config, "files", available_now=True)
    assert raw_lines(spark, lake) == expected_lines(files)
    assert table(spark, lake.quarantine).count() == 0

    monkeypatch.setattr(RawArchiver, "append_quarantine", original_append_quarantine)
    run_stream(spark, config, "files", available_now=True)
    assert raw_lines(spark, lake) == expected_lines(files)  # the replayed append was skipped
    assert table(spark, lake.quarantine).count() > 0
    assert_raw_is_valid_plus_quarantine(spark, lake)
    # The replay carried the same micro-batch timestamp as the first attempt.
    assert_quarantine_shares_raw_ingest_time(spark, lake)

    # 2. Crash after both appends, before the checkpoint commit.
    original_call = RawArchiver.__call__
    crashes = []

    def write_then_crash(self: RawArchiver, batch: DataFrame, batch_id: int) -> None:
        original_call(self, batch, batch_id)
        if not crashes:
            crashes.append(batch_id)
            raise RuntimeError("simulated crash before the checkpoint commit")

    files["b.jsonl"] = [event("b-1", "vehicle-001", now, 10.0), "[]"]
    land(config, "b.jsonl", files["b.jsonl"], now)
    monkeypatch.setattr(RawArchiver, "__call__", write_then_crash)
    with pytest.raises(WeirError, match="simulated crash before the checkpoint commit"):
        run_stream(spark, config, "files", available_now=True)
    quarantined = table(spark, lake.quarantine).count()
    monkeypatch.setattr(RawArchiver, "__call__", original_call)
    run_stream(spark, config, "files", available_now=True)
    assert raw_lines(spark, lake) == expected_lines(files)
    assert table(spark, lake.quarantine).count() == quarantined
    assert_raw_is_valid_plus_quarantine(spark, lake)

    # 3. The checkpoint guard: a lost checkpoint next to existing output is refused...
    shutil.rmtree(local_path(lake.checkpoint("raw-files")))
    before = versions(spark, lake)
    with pytest.raises(WeirError, match="--reset-checkpoint"):
        run_stream(spark, config, "files", available_now=True)
    assert versions(spark, lake) == before
    # ... and --reset-checkpoint starts a new writer epoch that Delta does not skip: the
    # landing folder is read again, so each line is archived a second time.
    run_stream(spark, config, "files", available_now=True, reset_checkpoint=True)
    assert raw_lines(spark, lake) == sorted(expected_lines(files) * 2)
    assert "raw-files-raw-e1" in committed_transactions(spark, lake.raw)
    assert read_epoch(spark, lake.checkpoint("raw-files")) == 1
    assert_raw_is_valid_plus_quarantine(spark, lake)
    with pytest.raises(ConfigError, match="needs no reset"):
        run_stream(spark, config, "files", available_now=True, reset_checkpoint=True)


# --- the checkpoint guard and the Delta log reader, without a stream -----------------------------


def raw_rows(spark: SparkSession, count: int) -> DataFrame:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    rows = [
        ("files", "landing", "a.jsonl", str(n), None, "{}", None, now, now.date())
        for n in range(1, count + 1)
    ]
    return spark.createDataFrame(rows, RAW_SCHEMA)


def test_committed_transactions_reads_the_delta_checkpoint_and_later_commits(
    spark: SparkSession, lake: LakeLayout
) -> None:
    from delta.tables import DeltaTable

    (
        DeltaTable.createIfNotExists(spark)
        .location(lake.raw.replace("file:///", "file:/"))
        .addColumns(RAW_SCHEMA)
        .partitionedBy(*RAW_PARTITION_COLUMNS)
        .property("delta.checkpointInterval", "2")
        .execute()
    )
    rows = raw_rows(spark, 1)
    for batch in range(4):
        append_once(rows, lake.raw, RAW_PARTITION_COLUMNS, "raw-files-raw", batch)
    append_once(rows, lake.raw, RAW_PARTITION_COLUMNS, "other-writer", 7)
    assert Path(local_path(lake.raw), "_delta_log", "_last_checkpoint").is_file()

    assert committed_transactions(spark, lake.raw) == {"raw-files-raw": 3, "other-writer": 7}
    # What the guard protects against: Delta skips a version it has seen.
    append_once(rows, lake.raw, RAW_PARTITION_COLUMNS, "raw-files-raw", 2)
    assert table(spark, lake.raw).count() == 5
    assert committed_transactions(spark, lake.quarantine) == {}


def test_guard_refuses_a_fresh_checkpoint_next_to_existing_writes(
    spark: SparkSession, lake: LakeLayout
) -> None:
    checkpoint = lake.checkpoint("raw-files")
    tables = (lake.raw, lake.quarantine)
    assert guard_checkpoint(spark, "raw-files", checkpoint, tables) == QueryWriters("raw-files", 0)
    ensure_table(spark, lake.raw, RAW_SCHEMA, RAW_PARTITION_COLUMNS)
    append_once(raw_rows(spark, 1), lake.raw, RAW_PARTITION_COLUMNS, "raw-files-raw", 4)
    append_once(raw_rows(spark, 1), lake.raw, RAW_PARTITION_COLUMNS, "raw-kafka-raw", 9)

    with pytest.raises(
        WeirError, match=r"missing or empty.*raw-files-raw up to batch 4"
    ) as refused:
        guard_checkpoint(spark, "raw-files", checkpoint, tables)
    assert "raw-kafka" not in str(refused.value)  # another query's writes are not its business
    writers = guard_checkpoint(spark, "raw-files", checkpoint, tables, reset_checkpoint=True)
    assert (writers.raw, writers.quarantine) == ("raw-files-raw-e1", "raw-files-quarantine-e1")
    # The epoch is recorded: a restart before the first batch needs no flag again.
    assert guard_checkpoint(spark, "raw-files", checkpoint, tables).epoch == 1


def test_guard_refuses_a_checkpoint_behind_its_output(
    spark: SparkSession, lake: LakeLayout
) -> None:
    checkpoint = lake.checkpoint("raw-files")
    offsets = Path(local_path(checkpoint), "offsets")
    offsets.mkdir(parents=True)
    (offsets / "0").write_text('v1\n{"batchWatermarkMs":0,"batchTimestampMs":0}\n{}\n')
    ensure_table(spark, lake.raw, RAW_SCHEMA, RAW_PARTITION_COLUMNS)
    append_once(raw_rows(spark, 1), lake.raw, RAW_PARTITION_COLUMNS, "raw-files-raw", 0)
    assert guard_checkpoint(spark, "raw-files", checkpoint, (lake.raw,)).epoch == 0

    append_once(raw_rows(spark, 1), lake.raw, RAW_PARTITION_COLUMNS, "raw-files-raw", 5)
    with pytest.raises(WeirError, match="behind its output"):
        guard_checkpoint(spark, "raw-files", checkpoint, (lake.raw,))
    with pytest.raises(ConfigError, match="needs no reset"):
        guard_checkpoint(spark, "raw-files", checkpoint, (lake.raw,), reset_checkpoint=True)


@pytest.mark.parametrize(
    ("app_id", "epoch"),
    [
        ("raw-files-raw", 0),
        ("raw-files-quarantine", 0),
        ("raw-files-raw-e12", 12),
        ("raw-files-quarantine-e3", 3),
        ("raw-files-rawx", None),
        ("raw-kafka-raw", None),
        ("raw-files-raw-e", None),
    ],
)
def test_epoch_of_an_app_id(app_id: str, epoch: Optional[int]) -> None:
    assert epoch_of("raw-files", app_id) == epoch


# --- progress rows ----------------------------------------------------------------------------


def test_progress_row_from_a_kafka_progress_report() -> None:
    report = {
        "id": "q-1",
        "runId": "r-1",
        "name": "raw-kafka",
        "timestamp": "2026-03-01T12:00:05.250Z",
        "batchId": 42,
        "numInputRows": 1500,
        "inputRowsPerSecond": 300.0,
        "processedRowsPerSecond": 750.5,
        "durationMs": {"triggerExecution": 2000, "addBatch": 1800},
        "eventTime": {"watermark": "2026-03-01T11:50:00.000Z"},
        "stateOperators": [{"numRowsTotal": 10}, {"numRowsTotal": 5}],
        "sources": [
            {
                "description": "KafkaV2[Subscribe[telemetry]]",
                "startOffset": {"telemetry": {"0": 100}},
                "endOffset": {"telemetry": {"0": 1600}},
                "latestOffset": {"telemetry": {"0": 1700}},
                "metrics": {"maxOffsetsBehindLatest": "100", "avgOffsetsBehindLatest": "100.0"},
            }
        ],
    }
    row = progress_row(report)
    assert row["query_name"] == "raw-kafka"
    assert row["batch_id"] == 42
    assert row["trigger_time"] == datetime(2026, 3, 1, 12, 0, 5, 250000, tzinfo=UTC)
    assert row["progress_date"] == datetime(2026, 3, 1).date()
    assert row["watermark"] == datetime(2026, 3, 1, 11, 50, tzinfo=UTC)
    assert row["offsets_behind_latest"] == 100
    assert row["state_rows"] == 15
    assert row["batch_duration_ms"] == 2000
    assert json.loads(row["end_offset"]) == {"telemetry": {"0": 1600}}
    line = progress_line(row)
    assert line.startswith("raw-kafka batch 42: 1500 rows 750 rows/s in 2.00s")
    assert "watermark 2026-03-01T11:50:00Z" in line
    assert "lag 100 offsets" in line


def test_error_summary_names_the_exception_of_a_foreach_batch_function() -> None:
    message = (
        "An exception was raised by the Python Proxy. Return Message: Traceback (most recent "
        'call last):\n  File "x.py", line 1, in f\n    boom()\nRuntimeError: disk on fire\n\n'
        "=== Streaming Query ===\nIdentifier: raw-files\n"
    )
    assert error_summary(message) == "RuntimeError: disk on fire"
    assert error_summary("[STREAM_FAILED] Query failed: lost\n\tat x.y\n") == (
        "[STREAM_FAILED] Query failed: lost"
    )


# --- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "code"), [("kinesis", EXIT_RUNTIME_FAILURE), ("pigeon", EXIT_BAD_CONFIG)]
)
def test_stream_source_not_built_or_unknown(
    source: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = str(PROJECT_ROOT / "conf" / "local.yaml")
    assert main(["stream", "--conf", conf, "--source", source]) == code
    assert "Traceback" not in capsys.readouterr().err


def write_conf(config: WeirConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.model_dump()), "utf-8")
    return path


def start_weir_stream(config: WeirConfig, tmp_path: Path, source: str) -> subprocess.Popen:
    """`weir stream` in its own process group (so a kill reaches its JVM too); log to a file."""
    conf = write_conf(config, tmp_path / "stream.yaml")
    log = (tmp_path / "stream.log").open("w")
    return subprocess.Popen(
        [str(WEIR), "stream", "--conf", str(conf), "--source", source],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("WEIR__")},
    )


def exit_code(process: subprocess.Popen, timeout: float) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise


@pytest.mark.slow
def test_sigterm_stops_after_the_current_batch_and_exits_0(
    spark: SparkSession, weir_config: WeirConfig, tmp_path: Path
) -> None:
    config = lake_config(weir_config, tmp_path / "lake", trigger_interval_seconds=1)
    lake = LakeLayout.from_config(config)
    now = datetime.now(UTC)
    lines = [event(f"t-{n}", "vehicle-001", now, 20.0) for n in range(5)]
    land(config, "a.jsonl", lines, now)
    process = start_weir_stream(config, tmp_path, "files")
    try:
        wait_until(
            lambda: raw_count(spark, lake) == len(lines),
            timeout=300,
            what="the running stream archives the landed file",
        )
        process.send_signal(signal.SIGTERM)
        code = exit_code(process, timeout=180)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    output = (tmp_path / "stream.log").read_text()
    assert code == 0, output[-3000:]
    assert "stopping after the current micro-batch" in output
    assert "stopped by signal" in output


# --- Kafka ------------------------------------------------------------------------------------


def kafka_topic(config: WeirConfig, partitions: int = 2) -> WeirConfig:
    """A fresh topic of its own (the shared one may hold other tests' records)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"telemetry-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": config.sources.kafka.bootstrap_servers})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(timeout=30)
    kafka = config.sources.kafka.model_copy(update={"topic": name, "partitions": partitions})
    return config.model_copy(update={"sources": config.sources.model_copy(update={"kafka": kafka})})


class Ledger:
    """What the producer delivered: (partition, offset) of every record, as text."""

    def __init__(self, config: WeirConfig) -> None:
        from confluent_kafka import Producer

        self.topic = config.sources.kafka.topic
        self.producer = Producer(
            {"bootstrap.servers": config.sources.kafka.bootstrap_servers, "linger.ms": 5}
        )
        self.delivered: set[tuple[str, str]] = set()
        self.errors: list[str] = []
        self.sent = 0

    def _delivered(self, error: object, message: object) -> None:
        if error is not None:
            self.errors.append(str(error))
        else:
            self.delivered.add((str(message.partition()), str(message.offset())))

    def produce(self, count: int, now: datetime) -> None:
        for _ in range(count):
            n = self.sent
            payload = event(f"k-{n}", f"vehicle-{n % 5:03d}", now - timedelta(seconds=n % 50), 20.0)
            self.producer.produce(
                self.topic, payload, key=f"vehicle-{n % 5:03d}", on_delivery=self._delivered
            )
            self.sent += 1
        assert self.producer.flush(30) == 0
        assert not self.errors, self.errors


def kafka_coordinates(spark: SparkSession, lake: LakeLayout) -> list[tuple[str, str]]:
    return [
        (r.source_partition, r.source_offset)
        for r in table(spark, lake.raw).select("source_partition", "source_offset").collect()
    ]


@pytest.mark.slow
def test_kafka_available_now_archives_every_record_once(
    spark: SparkSession, local_infra: WeirConfig, tmp_path: Path
) -> None:
    config = kafka_topic(lake_config(local_infra, tmp_path / "lake"))
    lake = LakeLayout.from_config(config)
    ledger = Ledger(config)
    ledger.produce(200, datetime.now(UTC))

    run_stream(spark, config, "kafka", available_now=True)

    coordinates = kafka_coordinates(spark, lake)
    assert len(coordinates) == len(set(coordinates)) == 200
    assert set(coordinates) == ledger.delivered
    raw = table(spark, lake.raw)
    assert {r.source_stream for r in raw.select("source_stream").distinct().collect()} == {
        config.sources.kafka.topic
    }
    assert raw.where("record_key IS NULL OR arrival_time IS NULL").count() == 0
    assert table(spark, lake.quarantine).count() == 0
    assert_speed_equals_batch(spark, lake)


@pytest.mark.slow
def test_kafka_stream_killed_with_sigkill_loses_and_repeats_nothing(
    spark: SparkSession, local_infra: WeirConfig, tmp_path: Path
) -> None:
    config = kafka_topic(lake_config(local_infra, tmp_path / "lake", trigger_interval_seconds=1))
    lake = LakeLayout.from_config(config)
    ledger = Ledger(config)
    now = datetime.now(UTC)
    ledger.produce(100, now)
    process = start_weir_stream(config, tmp_path, "kafka")
    stop_producing = threading.Event()

    def keep_producing() -> None:
        while not stop_producing.is_set() and ledger.sent < 5000:
            ledger.produce(20, now)
            stop_producing.wait(0.2)  # paced: about a hundred records per second

    producer = threading.Thread(target=keep_producing, daemon=True)
    producer.start()
    try:
        wait_until(
            lambda: raw_count(spark, lake) >= 100,
            timeout=300,
            what="the running stream archives records",
        )
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        stop_producing.set()
        producer.join(timeout=60)
    ledger.produce(50, now)  # and more while it is down

    run_stream(spark, config, "kafka", available_now=True)

    coordinates = kafka_coordinates(spark, lake)
    assert len(coordinates) == len(set(coordinates)), "a record was archived twice"
    assert set(coordinates) == ledger.delivered, "a record was lost"
    assert_raw_is_valid_plus_quarantine(spark, lake)
