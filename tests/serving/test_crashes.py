"""The merge's inputs, a merge killed before its record, merges beside other writers.

Each scenario ends in the state a clean run leaves: the unified table equals the serving rule
applied to the inputs the last merge pinned. Kills are SIGKILL at a named crash point
(weir.crashpoints); the interleavings are made, not waited for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from weir import crashpoints
from weir.config import WeirConfig
from weir.control import (
    MODE_FULL,
    MODE_INCREMENTAL,
    MODE_RANGE,
    RUN_FAILED,
    RUN_SUCCEEDED,
    BatchRun,
    merge_runs,
)
from weir.crashpoints import CRASH_ENV
from weir.delta import table_version
from weir.lake import LakeLayout
from weir.maintain import maintain_table, weir_tables
from weir.schemas import LAYER_BATCH, LAYER_SPEED
from weir.serving import merge
from weir.serving.merge import run_merge, served_batch

from .builders import (
    H1,
    UTC,
    assert_unified,
    at,
    batch_run,
    minute,
    upsert,
    write_conf,
    write_view,
)

WEIR = Path(sys.executable).parent / "weir"
H2 = at("10:02")

BATCH_1 = [minute("veh-1", "09:59", 3, LAYER_BATCH)]
SPEED = [
    minute("veh-1", "09:59", 1, LAYER_SPEED),
    minute("veh-1", "10:00", 4, LAYER_SPEED),
    minute("veh-1", "10:01", 5, LAYER_SPEED),
    minute("veh-1", "10:02", 6, LAYER_SPEED),
]
SERVED_1 = [BATCH_1[0], *SPEED[1:]]  # H1 = 10:00: batch up to the window ending 10:00
BATCH_2 = [
    minute("veh-1", "09:59", 3, LAYER_BATCH),
    minute("veh-1", "10:00", 8, LAYER_BATCH),
    minute("veh-1", "10:01", 9, LAYER_BATCH),
]
SERVED_2 = [*BATCH_2, SPEED[3]]  # H2 = 10:02


def run(
    run_id: str,
    mode: str,
    finished_minute: int,
    view_version: int | None,
    status: str = RUN_SUCCEEDED,
) -> BatchRun:
    finished = datetime(2026, 3, 1, 12, finished_minute, tzinfo=UTC)
    return BatchRun(
        run_id=run_id,
        status=status,
        mode=mode,
        cutoff=finished,
        horizon=finished - timedelta(minutes=10),
        started_at=finished - timedelta(minutes=1),
        finished_at=finished,
        view_version=view_version,
    )


# --- Which batch run, with which BATCH version ---------------------------------------------------


def test_the_horizon_and_the_view_version_come_from_the_recorded_runs() -> None:
    full = run("full", MODE_FULL, 1, 4)
    unchanged = run("unchanged", MODE_INCREMENTAL, 2, None)  # committed nothing: v4 stays
    assert served_batch([full, unchanged]) == (unchanged, 4)
    repair = run("repair", MODE_RANGE, 3, 5)  # a later range run's repair is served, H is not
    assert served_batch([repair, full, unchanged]) == (unchanged, 5)
    failed = run("failed", MODE_FULL, 4, 6, status=RUN_FAILED)  # vouches for nothing
    assert served_batch([full, unchanged, repair, failed]) == (unchanged, 5)


def test_no_recorded_run_serves_no_batch() -> None:
    assert served_batch([]) == (None, None)
    assert served_batch([run("repair", MODE_RANGE, 1, 2)]) == (None, 2)
    # Records written before view_version existed: the caller reads the view after them.
    assert served_batch([run("old", MODE_FULL, 1, None)])[1] is None


def test_the_merge_never_pairs_a_new_horizon_with_an_old_view_or_the_reverse(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout
) -> None:
    write_view(spark, lake.speed, SPEED)
    write_view(spark, lake.batch, BATCH_1)
    batch_run(spark, lake, H1)
    first = run_merge(spark, config)
    assert_unified(spark, lake, SERVED_1)

    # A batch run between its view commit and its record (where a kill at
    # BATCH_BEFORE_RECORD leaves it, or where a running one is for a while): its view is
    # not served, neither with the old horizon nor alone.
    write_view(spark, lake.batch, BATCH_2)
    between = run_merge(spark, config)
    assert (between.horizon, between.batch_version) == (H1, first.batch_version)
    assert_unified(spark, lake, SERVED_1)

    # Recorded: its horizon and its view together.
    batch_run(spark, lake, H2)
    recorded = run_merge(spark, config)
    assert (recorded.horizon, recorded.batch_version) == (H2, table_version(spark, lake.batch))
    assert_unified(spark, lake, SERVED_2)


def test_runs_recorded_without_a_view_version_are_served_with_the_view_read_after_them(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout
) -> None:
    write_view(spark, lake.speed, SPEED)
    write_view(spark, lake.batch, BATCH_2)
    batch_run(spark, lake, H2, view_version=None)
    served = run_merge(spark, config)
    assert (served.horizon, served.batch_version) == (H2, 0)
    assert_unified(spark, lake, SERVED_2)


# --- Kills and concurrent writers ---------------------------------------------------------------


@pytest.mark.slow
def test_a_merge_killed_between_its_commit_and_its_record_is_repaired_by_the_next(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout, tmp_path: Path
) -> None:
    write_view(spark, lake.speed, SPEED)
    write_view(spark, lake.batch, BATCH_1)
    batch_run(spark, lake, H1)
    first = run_merge(spark, config)
    write_view(spark, lake.batch, BATCH_2)
    batch_run(spark, lake, H2)

    killed = subprocess.run(
        [str(WEIR), "merge", "--conf", write_conf(config, tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("WEIR")},
            CRASH_ENV: crashpoints.MERGE_BEFORE_RECORD,
        },
    )

    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [r.run_id for r in merge_runs(spark, lake)] == [first.run_id]  # no record
    assert table_version(spark, lake.serving) == first.serving_version + 1  # but a commit
    assert_unified(spark, lake, SERVED_2)
    # A stream upsert meanwhile; the next merge builds on the last *recorded* merge, sees the
    # unrecorded commit as a foreign change in its scope, and publishes the rule.
    upsert(spark, lake.speed, [minute("veh-1", "10:02", 7, LAYER_SPEED)])
    after = run_merge(spark, config)
    assert (after.status, after.previous_run_id, after.horizon) == (
        RUN_SUCCEEDED,
        first.run_id,
        H2,
    )
    assert_unified(spark, lake, [*BATCH_2, minute("veh-1", "10:02", 7, LAYER_SPEED)])
    assert run_merge(spark, config).partitions_replaced == []  # and nothing is left to repair


def test_two_merges_at_once_both_succeed_and_publish_the_rule(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Made, not waited for: merge A has diffed and holds before its MERGE until merge B has
    # committed; A then finds the table moved, diffs again and publishes the same rule.
    write_view(spark, lake.speed, SPEED)
    run_merge(spark, config)  # the unified table exists (two merges creating it both retry)
    write_view(spark, lake.batch, BATCH_2)
    batch_run(spark, lake, H2)
    real = merge.apply_changes
    b_committed = threading.Event()

    def interleaved(*args, **kwargs) -> None:
        if threading.current_thread().name == "merge-a" and not b_committed.is_set():
            assert b_committed.wait(timeout=600), "merge B never committed"
        real(*args, **kwargs)
        if threading.current_thread().name == "merge-b":
            b_committed.set()

    monkeypatch.setattr(merge, "apply_changes", interleaved)
    done: dict[str, object] = {}

    def merge_as(name: str) -> None:
        try:
            done[name] = run_merge(spark, config, sleep=lambda _: None)
        except Exception as error:  # reported by the assertion below
            done[name] = error

    threads = [threading.Thread(target=merge_as, args=(n,), name=n) for n in ("merge-a", "merge-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)

    a, b = done["merge-a"], done["merge-b"]
    assert getattr(a, "status", a) == RUN_SUCCEEDED and getattr(b, "status", b) == RUN_SUCCEEDED
    assert a.attempts == 2 and b.attempts == 1  # A lost once to B's commit
    assert not a.committed  # B had already published what A wanted
    assert_unified(spark, lake, SERVED_2)


@pytest.mark.slow
def test_a_merge_beside_a_real_maintain_of_the_unified_table_publishes_the_rule(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `weir maintain`'s own OPTIMIZE of the unified table runs while the merge's MERGE runs:
    # whichever commits second conflicts and is retried (both retry); nothing is lost.
    write_view(spark, lake.speed, SPEED)
    run_merge(spark, config)
    for count in (2, 3):  # more files per date, so OPTIMIZE has something to compact
        upsert(spark, lake.speed, [minute("veh-1", "10:02", count, LAYER_SPEED)])
        run_merge(spark, config)
    write_view(spark, lake.batch, BATCH_2)
    batch_run(spark, lake, H2)
    (serving,) = [t for t in weir_tables(lake) if t.path == lake.serving]
    real = merge.apply_changes
    maintained: list[object] = []

    def beside_maintain(*args, **kwargs) -> None:
        if maintained:
            return real(*args, **kwargs)
        thread = threading.Thread(
            target=lambda: maintained.append(maintain_table(spark, serving, 168))
        )
        thread.start()
        try:
            real(*args, **kwargs)
        finally:
            thread.join(timeout=600)

    monkeypatch.setattr(merge, "apply_changes", beside_maintain)
    done = run_merge(spark, config)

    assert done.status == RUN_SUCCEEDED
    assert maintained and maintained[0].status == "maintained"
    assert_unified(spark, lake, [*BATCH_2, minute("veh-1", "10:02", 3, LAYER_SPEED)])
