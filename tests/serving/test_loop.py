"""`weir merge --follow | --every`: the merge loop (weir.serving.loop, docs/serving.md).

The loop's timing and failure handling are pinned with a fake merge and a fake clock (no
Spark); one test runs real merges on a tiny lake built with test_serving's helpers while a
callback plays the stream, and the command line is run in-process.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import pytest
from pyspark.sql import SparkSession

from weir.cli import main
from weir.config import WeirConfig
from weir.control import RUN_FAILED, RUN_SUCCEEDED, MergeRun, merge_runs
from weir.errors import EXIT_BAD_CONFIG, EXIT_OK, EXIT_RUNTIME_FAILURE, WeirError
from weir.lake import LakeLayout
from weir.schemas import LAYER_SPEED
from weir.serving import loop as merge_loop
from weir.serving.loop import describe_merge, follow_merges
from weir.serving.rule import SCOPE_FULL, SCOPE_INCREMENTAL, SCOPE_NONE

from .builders import (
    JOB,
    SPEED_ROWS,
    assert_unified,
    minute,
    upsert,
    write_conf,
    write_view,
)

STARTED = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def config(weir_config: WeirConfig, lake: LakeLayout) -> WeirConfig:
    """The session config with the lake moved to this test's tmp lake."""
    return weir_config.model_copy(
        update={"lake": weir_config.lake.model_copy(update={"root": lake.root})}
    )


# --- The loop's timing and failures: a fake merge on a fake clock ------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class RecordingStop(threading.Event):
    """A stop event whose waits advance the fake clock instead of blocking."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.waits: list[float] = []

    def wait(self, timeout: Optional[float] = None) -> bool:
        assert timeout is not None, "the loop must never wait without a timeout"
        self.waits.append(round(timeout, 6))
        self.clock.now += timeout
        return self.is_set()


def fake_merge(
    clock: FakeClock, durations: list[float], fail_at: Optional[int] = None
) -> tuple[list[float], object]:
    """A merge taking ``durations[k]`` fake seconds; the ``fail_at``-th call (1-based) fails."""
    starts: list[float] = []

    def merge(_spark: object, _config: object) -> MergeRun:
        starts.append(clock.now)
        if fail_at is not None and len(starts) == fail_at:
            raise WeirError("merge merge-x failed: AnalysisException: speed table is broken")
        clock.now += durations[len(starts) - 1]
        return MergeRun(
            run_id=f"merge-{len(starts)}",
            status=RUN_SUCCEEDED,
            started_at=STARTED,
            scope=SCOPE_INCREMENTAL,
            rows_written=10,
            rows_deleted=0,
            serving_version=len(starts),
            partitions_replaced=[STARTED.date()],
        )

    return starts, merge


def stop_after(stop: threading.Event, merges: int) -> object:
    seen: list[MergeRun] = []

    def on_merge(run: MergeRun, _seconds: float) -> None:
        seen.append(run)
        if len(seen) == merges:
            stop.set()

    return on_merge


def test_merges_start_an_interval_apart_and_an_overrun_is_followed_at_once() -> None:
    clock = FakeClock()
    stop = RecordingStop(clock)
    starts, merge = fake_merge(clock, [2.0, 7.0, 1.0, 4.0])

    done = follow_merges(
        None, None, 5.0, stop, merge=merge, on_merge=stop_after(stop, 4), clock=clock
    )

    assert done == 4
    # Start to start: 0, 5; the second took 7 s, so the third starts at once (12), then 17.
    assert starts == [0.0, 5.0, 12.0, 17.0]
    assert stop.waits == [3.0, 4.0]  # no wait after the overrun, none after the stop


def test_a_stop_set_during_a_merge_ends_the_loop_after_it() -> None:
    clock = FakeClock()
    stop = RecordingStop(clock)
    starts, merge = fake_merge(clock, [1.0, 1.0])

    def merge_then_signal(spark: object, config: object) -> MergeRun:
        run = merge(spark, config)
        stop.set()  # SIGTERM arrived while the merge ran
        return run

    assert follow_merges(None, None, 60.0, stop, merge=merge_then_signal, clock=clock) == 1
    assert starts == [0.0] and stop.waits == []


def test_a_stop_already_set_runs_no_merge() -> None:
    clock = FakeClock()
    stop = RecordingStop(clock)
    stop.set()
    starts, merge = fake_merge(clock, [1.0])
    assert follow_merges(None, None, 60.0, stop, merge=merge, clock=clock) == 0
    assert starts == []


def test_a_failed_merge_ends_the_loop_with_its_reason() -> None:
    clock = FakeClock()
    stop = RecordingStop(clock)
    starts, merge = fake_merge(clock, [1.0, 1.0, 1.0], fail_at=3)

    with pytest.raises(WeirError, match=r"after 2 successful merge\(s\).*speed table is broken"):
        follow_merges(None, None, 5.0, stop, merge=merge, clock=clock)
    assert len(starts) == 3  # no fourth attempt: the loop does not keep going


def test_an_unexpected_exception_is_reported_as_a_weir_error() -> None:
    def merge(_spark: object, _config: object) -> MergeRun:
        raise RuntimeError("the JVM is gone")

    with pytest.raises(WeirError, match=r"after 0 successful merge.*RuntimeError: the JVM is gone"):
        follow_merges(None, None, 5.0, threading.Event(), merge=merge)


@pytest.mark.parametrize("interval", [0.0, -1.0])
def test_a_non_positive_interval_is_refused(interval: float) -> None:
    with pytest.raises(WeirError, match="positive"):
        follow_merges(None, None, interval, threading.Event(), merge=lambda s, c: None)


def test_one_line_per_merge_says_rows_horizon_and_duration() -> None:
    run = MergeRun(
        run_id="merge-1",
        status=RUN_SUCCEEDED,
        started_at=STARTED,
        scope=SCOPE_INCREMENTAL,
        rows_written=12,
        rows_deleted=3,
        serving_version=7,
        partitions_replaced=[STARTED.date()],
        horizon=STARTED,
    )
    line = describe_merge(2, run, 4.25)
    assert line == (
        "merge #2 merge-1: succeeded, scope incremental, 12 rows written, 3 deleted, "
        "serving v7, H 2026-03-01T12:00:00+00:00, 4.2s"
    )
    idle = dataclasses.replace(run, rows_written=0, rows_deleted=0, partitions_replaced=[])
    assert "no commit (v7)" in describe_merge(3, dataclasses.replace(idle, horizon=None), 1.0)
    assert "H none (speed only)" in describe_merge(3, dataclasses.replace(idle, horizon=None), 1)


# --- Real merges on a tiny lake ------------------------------------------------------------------


def test_the_loop_publishes_what_the_stream_upserts_between_merges(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout
) -> None:
    write_view(spark, lake.speed, SPEED_ROWS)
    newer = [minute("veh-1", "10:01", 8, LAYER_SPEED), minute("veh-3", "10:02", 2, LAYER_SPEED)]
    stop = threading.Event()
    seen: list[MergeRun] = []

    def on_merge(run: MergeRun, _seconds: float) -> None:
        seen.append(run)
        if len(seen) == 1:
            upsert(spark, lake.speed, newer)  # the stream's next micro-batch
        if len(seen) == 3:
            stop.set()

    assert follow_merges(spark, config, 0.01, stop, on_merge=on_merge) == 3

    final = {(r[0], r[1]): r for r in SPEED_ROWS}
    final.update({(r[0], r[1]): r for r in newer})
    assert_unified(spark, lake, list(final.values()))
    runs = merge_runs(spark, lake)
    assert [r.status for r in runs] == [RUN_SUCCEEDED] * 3
    assert [r.scope for r in runs] == [SCOPE_FULL, SCOPE_INCREMENTAL, SCOPE_NONE]
    assert [r.rows_written for r in runs] == [len(SPEED_ROWS), 2, 0]


def test_each_merge_of_the_loop_starts_from_the_run_the_previous_one_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    baselines: list[Optional[MergeRun]] = []

    def run_merge(spark: object, config: object, baseline: Optional[MergeRun]) -> MergeRun:
        baselines.append(baseline)
        return MergeRun(run_id=f"merge-{len(baselines)}", status=RUN_SUCCEEDED, started_at=STARTED)

    monkeypatch.setattr(merge_loop, "run_merge", run_merge)
    merge = merge_loop.chained_merges()
    first, second, third = (merge(None, None) for _ in range(3))

    # The first reads its baseline from _control/merge_runs (None asks run_merge to).
    assert baselines == [None, first, second]
    assert third.run_id == "merge-3"


def broken_lake(spark: SparkSession, lake: LakeLayout) -> None:
    """A SPEED table that is not a minute view: every merge fails reading it."""
    spark.createDataFrame([(1,)], "x int").write.format("delta").save(lake.speed)


def test_a_failing_merge_on_a_lake_ends_the_loop_and_is_recorded(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout
) -> None:
    broken_lake(spark, lake)
    with pytest.raises(WeirError, match=r"after 0 successful merge\(s\): merge merge-.* failed"):
        follow_merges(spark, config, 0.01, threading.Event())
    assert [r.status for r in merge_runs(spark, lake)] == [RUN_FAILED]


# --- The command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "interval"),
    [(["--follow"], 60), (["--every", "7"], 7), (["--follow", "--every", "3"], 3)],
)
def test_follow_and_every_run_the_loop_at_their_interval(
    options: list[str],
    interval: int,
    spark: SparkSession,
    config: WeirConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert config.timing.merge_interval_seconds == 60
    calls = []

    def loop(spark: object, config: object, interval_s: float, stop: threading.Event) -> int:
        calls.append(interval_s)
        return 2

    monkeypatch.setattr(merge_loop, "follow_merges", loop)
    assert main(["merge", *options, "--conf", write_conf(config, tmp_path)]) == EXIT_OK
    assert calls == [interval]
    assert "stopped after 2 merge(s)" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["0", "-5", "soon", "86401"])
def test_a_bad_interval_exits_2_naming_the_option(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["merge", "--every", value]) == EXIT_BAD_CONFIG
    captured = capsys.readouterr()
    assert "--every" in captured.out + captured.err
    assert "Traceback" not in captured.out + captured.err


def test_a_failing_merge_ends_weir_merge_every_with_exit_1_and_the_reason(
    spark: SparkSession,
    config: WeirConfig,
    lake: LakeLayout,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken_lake(spark, lake)
    code = main(["merge", "--every", "1", "--conf", write_conf(config, tmp_path)])
    assert code == EXIT_RUNTIME_FAILURE
    assert "merge loop ended after 0 successful merge(s)" in capsys.readouterr().err


def test_merge_job_with_a_bad_interval_exits_2_naming_the_option(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(JOB), "--every", "0"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == EXIT_BAD_CONFIG, done.stderr
    assert "--every" in done.stderr
