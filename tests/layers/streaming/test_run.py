"""`weir stream`: the raw archiver and the speed layer, exactly once (docs/streaming.md).

Streaming tests are scripts of actions and checks, like Spark's own streaming tests: land or
produce records, process what is available, check the tables, stop or crash, add more, restart,
check that nothing was lost or repeated. Every wait is a condition with a deadline.
"""

from __future__ import annotations

import re
import shutil
import signal
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir import crashpoints
from weir.cli import main
from weir.config import ConfigError, WeirConfig
from weir.contract.rules import Reason
from weir.control import fences
from weir.crashpoints import CRASH_ENV, HOLD_ENV
from weir.delta import committed_transactions
from weir.errors import EXIT_BAD_CONFIG, WeirError
from weir.lake import LakeLayout, local_path
from weir.layers.streaming import run_stream
from weir.layers.streaming.archiver import RawArchiver
from weir.layers.streaming.checkpoints import (
    read_epoch,
)
from weir.sample import mixed_sample

from .builders import (
    PROJECT_ROOT,
    UTC,
    VIEW_COLUMNS,
    StreamProcess,
    assert_quarantine_shares_raw_ingest_time,
    assert_raw_is_valid_plus_quarantine,
    assert_speed_equals_batch,
    batch_in_flight,
    committed_batches,
    event,
    expected_lines,
    lake_config,
    land,
    raw_count,
    raw_lines,
    speed_view,
    split_conflicting_duplicate,
    table,
    versions,
    write_conf,
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
def test_killed_between_the_raw_commit_and_the_speed_write_restarts_to_a_clean_runs_state(
    spark: SparkSession, weir_config: WeirConfig, tmp_path: Path
) -> None:
    # Not a race: the speed layer is held before its MERGE, and the process kills itself
    # (SIGKILL, with its JVM) right after RAW has committed the first micro-batch.
    config = lake_config(weir_config, tmp_path / "lake")
    lake = LakeLayout.from_config(config)
    now = datetime.now(UTC).replace(microsecond=0)
    sample, conflicting = split_conflicting_duplicate(mixed_sample(30, seed=5, now=now))
    files = {"a.jsonl": [payload for payload, _ in sample], "b.jsonl": [conflicting]}
    land(config, "a.jsonl", files["a.jsonl"], now - timedelta(seconds=60))
    land(config, "b.jsonl", files["b.jsonl"], now - timedelta(seconds=30))

    stream = StreamProcess(
        config,
        tmp_path,
        "files",
        env={CRASH_ENV: crashpoints.RAW_COMMITTED, HOLD_ENV: crashpoints.SPEED_BEFORE_WRITE},
    )
    assert stream.process.wait(timeout=300) == -signal.SIGKILL, stream.output[-3000:]
    assert raw_count(spark, lake) == len(files["a.jsonl"])  # the first file, committed
    assert speed_view(spark, lake).count() == 0  # the speed layer never wrote

    run_stream(spark, config, "files", available_now=True)

    assert raw_lines(spark, lake) == expected_lines(files)
    assert_raw_is_valid_plus_quarantine(spark, lake)
    assert_quarantine_shares_raw_ingest_time(spark, lake)
    clean = lake_config(weir_config, tmp_path / "clean")
    for name, modified in (("a.jsonl", 60), ("b.jsonl", 30)):
        land(clean, name, files[name], now - timedelta(seconds=modified))
    run_stream(spark, clean, "files", available_now=True)
    clean_lake = LakeLayout.from_config(clean)
    assert_df_equality(
        speed_view(spark, lake).select(*VIEW_COLUMNS),
        speed_view(spark, clean_lake).select(*VIEW_COLUMNS),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    assert table(spark, lake.quarantine).count() == table(spark, clean_lake.quarantine).count()


@pytest.mark.slow
def test_a_stream_taken_over_between_heartbeats_commits_nothing_more(
    spark: SparkSession, weir_config: WeirConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The heartbeat runs once an hour here, so only the check before each micro-batch's
    # commits can notice that another writer took the fence over right after this one got it.
    config = lake_config(
        weir_config,
        tmp_path / "lake",
        writer_heartbeat_seconds=3600,
        writer_stale_after_seconds=10_800,
    )
    lake = LakeLayout.from_config(config)
    now = datetime.now(UTC).replace(microsecond=0)
    land(config, "a.jsonl", [payload for payload, _ in mixed_sample(10, seed=3, now=now)], now)
    acquire = fences.acquire

    def acquired_then_taken_over(store, fence, stale_after_seconds, *args, **kwargs):
        lease = acquire(store, fence, stale_after_seconds, *args, **kwargs)
        # Another host, to which this writer looked silent for longer than the timeout.
        later = lease.acquired_at + timedelta(seconds=stale_after_seconds + 1)
        acquire(store, fence, stale_after_seconds, lambda: later, host="elsewhere", pid=1)
        return lease

    monkeypatch.setattr(fences, "acquire", acquired_then_taken_over)

    with pytest.raises(fences.FenceLostError, match="taken over by elsewhere"):
        run_stream(spark, config, "files", available_now=True)

    assert raw_count(spark, lake) == 0
    for path in (lake.quarantine, lake.speed):
        assert table(spark, path).count() == 0


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
