"""`weir stream`: the raw archiver and the speed layer, exactly once (docs/streaming.md).

Streaming tests are scripts of actions and checks (STYLE.md §4): land or produce records,
process what is available, check the tables, stop or crash, add more, restart, check that
nothing was lost or repeated. Every wait is a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.cli import main
from weir.config import ConfigError, FilesSourceConfig, LakeConfig, TimingConfig, WeirConfig
from weir.contract import aggregate_minutes, classify_records, dedup_first_received, valid_events
from weir.contract.rules import Reason
from weir.errors import EXIT_BAD_CONFIG, WeirError
from weir.infra.process import wait_until
from weir.lake import LakeLayout, local_path
from weir.layers.checkpoints import (
    QueryWriters,
    committed_transactions,
    epoch_of,
    guard_checkpoint,
    latest_table_version,
    read_epoch,
)
from weir.layers.progress import STATUS_COLUMNS, latest_progress, progress_line, progress_row
from weir.layers.raw import RawArchiver, append_once
from weir.layers.streaming import ensure_table, error_summary, run_stream
from weir.sample import mixed_sample
from weir.schemas import (
    LAYER_SPEED,
    MINUTE_SCHEMA,
    RAW_PARTITION_COLUMNS,
    RAW_SCHEMA,
    STREAM_PROGRESS_SCHEMA,
)
from weir.simulate.faults import FaultMix
from weir.simulate.ledger import read_ledger
from weir.simulate.run import SimulateOptions, run_simulation

UTC = timezone.utc
PROJECT_ROOT = Path(__file__).resolve().parents[2]
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
    if latest_table_version(spark, lake.raw) is None:
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
    actual = table(spark, lake.speed).select(*VIEW_COLUMNS)
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


# --- the files source end to end --------------------------------------------------------------


@pytest.mark.slow
def test_files_stream_archives_every_line_once_across_restarts(
    spark: SparkSession,
    weir_config: WeirConfig,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
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

    conf = write_conf(config, tmp_path / "stream.yaml")
    capsys.readouterr()
    assert main(["stream", "status", "--conf", str(conf)]) == 0
    status = capsys.readouterr().out
    assert re.search(r"raw-files\s+│\s+1\s+│", status), status  # the query's last batch
    assert "speed-files" in status

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
    files = {
        "a.jsonl": [payload for payload, _ in mixed_sample(6, seed=5, now=now)],
        "b.jsonl": [event("b-1", "vehicle-001", now, 10.0), "[]"],
    }
    land(config, "a.jsonl", files["a.jsonl"], now - timedelta(seconds=30))
    land(config, "b.jsonl", files["b.jsonl"], now)  # batch 1: one file per batch

    # 1. Crash in batch 0 after the RAW append, before the quarantine append.
    original_append_quarantine = RawArchiver.append_quarantine

    def crash_instead(self: RawArchiver, quarantine: DataFrame, batch_id: int) -> None:
        raise RuntimeError("simulated crash after the raw append")

    monkeypatch.setattr(RawArchiver, "append_quarantine", crash_instead)
    with pytest.raises(WeirError, match="raw-files failed"):
        run_stream(spark, config, "files", available_now=True)
    assert raw_lines(spark, lake) == expected_lines({"a.jsonl": files["a.jsonl"]})
    assert table(spark, lake.quarantine).count() == 0

    # 2. The replay of batch 0 crashes again, after both appends, before the checkpoint commit.
    monkeypatch.setattr(RawArchiver, "append_quarantine", original_append_quarantine)
    original_call = RawArchiver.__call__

    def write_then_crash(self: RawArchiver, batch: DataFrame, batch_id: int) -> None:
        original_call(self, batch, batch_id)
        raise RuntimeError("simulated crash before the checkpoint commit")

    monkeypatch.setattr(RawArchiver, "__call__", write_then_crash)
    with pytest.raises(WeirError, match="simulated crash before the checkpoint commit"):
        run_stream(spark, config, "files", available_now=True)
    assert raw_lines(spark, lake) == expected_lines({"a.jsonl": files["a.jsonl"]})  # skipped
    quarantined = table(spark, lake.quarantine).count()
    assert quarantined > 0  # the replay did the missing append
    assert_raw_is_valid_plus_quarantine(spark, lake)
    # The replay carried the same micro-batch timestamp as the first attempt.
    assert_quarantine_shares_raw_ingest_time(spark, lake)

    # 3. The next start replays batch 0 once more (both appends skipped), then batch 1.
    monkeypatch.setattr(RawArchiver, "__call__", original_call)
    run_stream(spark, config, "files", available_now=True)
    assert raw_lines(spark, lake) == expected_lines(files)
    assert table(spark, lake.quarantine).count() == quarantined + 1  # "[]" of b.jsonl
    assert_raw_is_valid_plus_quarantine(spark, lake)

    # 4. The checkpoint guard: a lost checkpoint next to existing output is refused...
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
    # Created path-based (no metastore) with a Delta checkpoint every 2 commits.
    interval = "spark.databricks.delta.properties.defaults.checkpointInterval"
    spark.conf.set(interval, "2")
    try:
        ensure_table(spark, lake.raw, RAW_SCHEMA, RAW_PARTITION_COLUMNS)  # version 0
    finally:
        spark.conf.unset(interval)
    rows = raw_rows(spark, 1)
    for batch in range(2):  # versions 1, 2: checkpointed
        append_once(rows, lake.raw, RAW_PARTITION_COLUMNS, "raw-files-raw", batch)
    append_once(rows, lake.raw, RAW_PARTITION_COLUMNS, "other-writer", 7)  # version 3: JSON
    assert Path(local_path(lake.raw), "_delta_log", "_last_checkpoint").is_file()

    assert committed_transactions(spark, lake.raw) == {"raw-files-raw": 1, "other-writer": 7}
    # What the guard protects against: Delta skips a version it has seen.
    append_once(rows, lake.raw, RAW_PARTITION_COLUMNS, "raw-files-raw", 0)
    assert table(spark, lake.raw).count() == 3
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


def test_stream_status_shows_the_last_batch_of_each_query(spark: SparkSession) -> None:
    reports = [
        progress_report("raw-files", 0, 1, 10),
        progress_report("raw-files", 1, 9, 3),
        progress_report("speed-files", 4, 5, 7),
        progress_report("speed-files", 3, 2, 9),
    ]
    progress = spark.createDataFrame([progress_row(r) for r in reports], STREAM_PROGRESS_SCHEMA)
    expected = spark.createDataFrame(
        [
            progress_row(progress_report("raw-files", 1, 9, 3)),
            progress_row(progress_report("speed-files", 4, 5, 7)),
        ],
        STREAM_PROGRESS_SCHEMA,
    ).select(*STATUS_COLUMNS)
    assert_df_equality(latest_progress(progress), expected, ignore_row_order=True)


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
    "arguments",
    [
        ["--source", "pigeon"],
        ["--source", "kinesis", "--reset-checkpoint"],  # Kinesis has no checkpoint to reset
    ],
    ids=["unknown source", "kinesis reset"],
)
def test_stream_bad_arguments_exit_2_before_anything_runs(
    arguments: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = str(PROJECT_ROOT / "conf" / "local.yaml")
    env = {"WEIR__LAKE__ROOT": f"file://{tmp_path}/lake"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert main(["stream", "--conf", conf, *arguments]) == EXIT_BAD_CONFIG
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "lake").exists()


def write_conf(config: WeirConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.model_dump()), "utf-8")
    return path


class StreamProcess:
    """`weir stream` in its own process group (a kill reaches its JVM too), logging to a file."""

    def __init__(self, config: WeirConfig, folder: Path, source: str) -> None:
        conf = write_conf(config, folder / "stream.yaml")
        self.log_path = folder / f"stream-{uuid.uuid4().hex[:6]}.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [str(WEIR), "stream", "--conf", str(conf), "--source", source],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
                start_new_session=True,
                env={k: v for k, v in os.environ.items() if not k.startswith("WEIR__")},
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


@pytest.mark.slow
def test_sigterm_finishes_the_running_batch_and_exits_0(
    spark: SparkSession, weir_config: WeirConfig, tmp_path: Path
) -> None:
    config = lake_config(weir_config, tmp_path / "lake", trigger_interval_seconds=1)
    lake = LakeLayout.from_config(config)
    now = datetime.now(UTC)
    files = {
        "a.jsonl": [event(f"a-{n}", "vehicle-001", now, 20.0) for n in range(3)],
        "b.jsonl": [event(f"b-{n}", "vehicle-002", now, 21.0) for n in range(3)],
    }
    land(config, "a.jsonl", files["a.jsonl"], now - timedelta(seconds=5))
    stream = StreamProcess(config, tmp_path, "files")
    try:
        stream.wait_for(lambda: raw_count(spark, lake) == 3, "the stream archives a.jsonl")
        # RAW's commit lands before the checkpoint's commit file: wait for both, or the batch
        # of a.jsonl would still look in flight and the signal would stop the stream before b.
        stream.wait_for(
            lambda: (
                bool(committed_batches(lake, "raw-files"))
                and batch_in_flight(lake, "raw-files") is None
            ),
            "raw-files commits the batch of a.jsonl",
        )
        archived_a = max(committed_batches(lake, "raw-files"))
        land(config, "b.jsonl", files["b.jsonl"], now)
        running = stream.wait_for(
            lambda: (
                (batch_in_flight(lake, "raw-files") or -1) > archived_a
                and batch_in_flight(lake, "raw-files")
            ),
            "raw-files starts the batch of b.jsonl",
            interval=0.02,
        )
        stream.process.send_signal(signal.SIGTERM)
        code = stream.process.wait(timeout=300)
    finally:
        stream.kill()
    output = stream.output
    assert code == 0, output[-4000:]
    assert "SIGTERM: stopping after the current micro-batch" in output
    assert "stopped by signal" in output
    assert running in committed_batches(lake, "raw-files")  # finished, not interrupted
    assert raw_lines(spark, lake) == expected_lines(files)
    # Path-based throughout: the stream never opened the local metastore, so it never locks
    # it against `weir catalog sync` or a notebook (embedded Derby admits one JVM).
    assert not (Path(config.infra.state_dir) / "metastore_db").exists()


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

    raw = table(spark, lake.raw).select("source_partition", "source_offset", "payload").collect()
    archived = Counter((r.source_partition, r.source_offset) for r in raw)
    assert [c for c, n in archived.items() if n > 1] == [], "records archived twice"
    assert set(archived) - set(ledger) == set(), "records nobody sent"
    assert set(ledger) - set(archived) == set(), "records lost"
    changed = [
        (r.source_partition, r.source_offset)
        for r in raw
        # Bytes that are not UTF-8 (one malformed_json variant) cannot survive a text payload.
        if ledger[(r.source_partition, r.source_offset)]["reason"] != Reason.MALFORMED_JSON
        and zlib.crc32(r.payload.encode("utf-8"))
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


@pytest.mark.slow
def test_simulated_fault_mix_is_archived_once_and_quarantined_as_the_ledger_says(
    spark: SparkSession, local_infra: WeirConfig, tmp_path: Path
) -> None:
    config = kafka_topic(lake_config(local_infra, tmp_path / "lake"))
    lake = LakeLayout.from_config(config)
    options = SimulateOptions(
        devices=20, rate=0, count=1500, sink="kafka", seed=4, faults=FaultMix.preset("heavy")
    )
    run = run_simulation(config, options)
    assert (run.status, run.failed, run.unconfirmed) == ("completed", 0, 0)
    ledger = ledger_records(run.ledger_dir)
    assert {row["fate"] for row in ledger.values()} >= {"valid", "quarantine", "duplicate"}

    conf = write_conf(config, tmp_path / "stream.yaml")
    assert main(["stream", "--conf", str(conf), "--source", "kafka", "--available-now"]) == 0

    assert_raw_and_quarantine_match_the_ledger(spark, lake, ledger)
    raw = table(spark, lake.raw)
    assert {r.source_stream for r in raw.select("source_stream").distinct().collect()} == {
        config.sources.kafka.topic
    }
    assert raw.where("record_key IS NULL OR arrival_time IS NULL").count() == 0


@pytest.mark.slow
def test_kafka_stream_killed_mid_batch_while_producing_ends_like_a_clean_run(
    spark: SparkSession, local_infra: WeirConfig, tmp_path: Path
) -> None:
    config = kafka_topic(lake_config(local_infra, tmp_path / "lake", trigger_interval_seconds=1))
    lake = LakeLayout.from_config(config)
    # Faults whose speed-layer result is exact (no late events, no conflicting copies), so the
    # SPEED a clean run would publish is the batch computation over the RAW it archives.
    faults = FaultMix(
        {
            "duplicate": 0.03,
            "out_of_order": 0.05,
            "malformed_json": 0.02,
            "bad_type": 0.02,
            "out_of_range": 0.02,
        }
    )
    producing = threading.Event()
    results: list[Any] = []

    def simulate() -> None:
        options = SimulateOptions(devices=10, rate=40, sink="kafka", seed=9, faults=faults)
        results.append(run_simulation(config, options, stop=producing))

    producer = threading.Thread(target=simulate, daemon=True)
    producer.start()
    try:
        # Crash 1: the raw archiver is inside a micro-batch (its appends may be half done).
        stream = StreamProcess(config, tmp_path, "kafka")
        try:
            stream.wait_for(
                lambda: (batch_in_flight(lake, "raw-kafka") or 0) >= 1,
                "raw-kafka runs its second micro-batch",
                interval=0.02,
            )
        finally:
            stream.kill()
        commits_before = raw_commits(lake)

        # Crash 2, after a restart: the speed layer is inside a micro-batch (its MERGE and
        # state store), and the archiver has committed since the restart.
        speed_done = max(committed_batches(lake, "speed-kafka"), default=-1)
        stream = StreamProcess(config, tmp_path, "kafka")
        try:
            stream.wait_for(
                lambda: (
                    (batch_in_flight(lake, "speed-kafka") or -1) > speed_done + 1
                    and raw_commits(lake) > commits_before
                ),
                "both queries make progress after the restart",
                interval=0.02,
            )
        finally:
            stream.kill()
    finally:
        producing.set()
        producer.join(timeout=120)
    (run,) = results
    assert (run.status, run.failed, run.unconfirmed) == ("interrupted", 0, 0)

    # Restart once more and drain: the tables are what one clean run would have written.
    run_stream(spark, config, "kafka", available_now=True)

    assert_raw_and_quarantine_match_the_ledger(spark, lake, ledger_records(run.ledger_dir))
    assert_speed_equals_batch(spark, lake)


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


@pytest.mark.slow
def test_kafka_broker_restart_under_a_running_stream_loses_nothing(
    spark: SparkSession, weir_config: WeirConfig, tmp_path: Path
) -> None:
    from weir.infra import stack_config
    from weir.infra.kafka import KafkaBroker
    from weir.infra.process import free_ports

    kafka_port, controller_port, aws_port = free_ports(3)
    stack = stack_config(
        weir_config,
        tmp_path / "stack",
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        aws_port=aws_port,
    )
    # Short client timeouts: a stream facing a dead broker says so in seconds, not minutes.
    security = stack.sources.kafka.security.model_copy(
        update={"options": {"default.api.timeout.ms": "4000", "request.timeout.ms": "3000"}}
    )
    kafka = stack.sources.kafka.model_copy(update={"security": security})
    stack = stack.model_copy(update={"sources": stack.sources.model_copy(update={"kafka": kafka})})
    broker = KafkaBroker(stack)  # private: the session's shared broker is never touched
    broker.wait_ready(broker.launch(stop_with_parent=True))
    try:
        config = kafka_topic(lake_config(stack, tmp_path / "lake", trigger_interval_seconds=1))
        lake = LakeLayout.from_config(config)
        produce(config, 0, 100)
        stop = threading.Event()
        outcome: list[BaseException] = []

        def stream() -> None:
            try:
                run_stream(spark, config, "kafka", stop=stop)
            except BaseException as error:
                outcome.append(error)

        runner = threading.Thread(target=stream, daemon=True)
        runner.start()
        try:
            wait_until(lambda: raw_count(spark, lake) == 100, timeout=300, what="first records")
            broker.stop()
            # The outage: the stream either rides it out or fails with a clear error.
            runner.join(timeout=120)
            broker.wait_ready(broker.launch(stop_with_parent=True))
            produce(config, 100, 50)
            if runner.is_alive():
                wait_until(lambda: raw_count(spark, lake) == 150, timeout=300, what="recovery")
        finally:
            stop.set()
            runner.join(timeout=300)
        if outcome:
            (error,) = outcome
            assert isinstance(error, WeirError), error
            assert re.match(r"(raw|speed)-kafka failed: ", str(error)), error
        # A restart drains whatever is left, without loss or duplicates.
        run_stream(spark, config, "kafka", available_now=True)
    finally:
        broker.stop()

    coordinates = Counter(
        (r.source_partition, r.source_offset)
        for r in table(spark, lake.raw).select("source_partition", "source_offset").collect()
    )
    assert len(coordinates) == 150 and set(coordinates.values()) == {1}
    assert_speed_equals_batch(spark, lake)
