"""A batch rebuild killed (SIGKILL, its JVM with it) at its riskiest moments restarts to the
state a clean run leaves, and no merge meanwhile publishes what it half did.

Not timing luck: the process kills itself at a named crash point (weir.crashpoints).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from weir import crashpoints
from weir.cli import main
from weir.config import WeirConfig
from weir.control import MODE_FULL, RUN_SUCCEEDED, batch_runs, merge_runs
from weir.control.fences import LocalFenceStore, acquire
from weir.crashpoints import CRASH_ENV
from weir.delta import table_version
from weir.lake import LakeLayout
from weir.layers.batch.run import BATCH_FENCE
from weir.serving.merge import run_merge

from .builders import (
    append_raw,
    config_for,
    event_index,
    rebuild,
    record,
    view,
    write_conf,
)

WEIR = Path(sys.executable).parent / "weir"

FIRST = [
    record("a1", "dev-a", "03-01T09:00:10", "03-01T09:00:20", 1, temp=20.0),
    record("b1", "dev-b", "03-01T09:00:30", "03-01T09:00:40", 2, temp=10.0),
]
CUTOFF_1 = "03-01T12:00:00"
LATER = [
    record("a2", "dev-a", "03-01T09:00:50", "03-01T12:30:00", 3, temp=22.0),  # late, same window
    record("a1", "dev-a", "03-01T09:00:10", "03-01T12:31:00", 4, temp=20.0),  # a retry of a1
    record("c1", "dev-c", "03-02T08:00:00", "03-02T08:00:05", 5, temp=30.0),  # a new date
]
CUTOFF_2 = "03-02T12:00:00"


def killed_rebuild(config: WeirConfig, folder: Path, point: str, *arguments: str) -> str:
    """`weir batch rebuild` in a session of its own, killing itself at ``point``; its output."""
    done = subprocess.run(
        [str(WEIR), "batch", "rebuild", "--conf", write_conf(config, folder), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=folder,
        start_new_session=True,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("WEIR")},
            CRASH_ENV: point,
        },
    )
    assert done.returncode == -signal.SIGKILL, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def clean_lake(
    spark: SparkSession, weir_config: WeirConfig, tmp_path_factory: pytest.TempPathFactory
) -> LakeLayout:
    """The lake a clean run leaves: both rebuilds and a merge, nothing killed (built once)."""
    clean_lake = LakeLayout(root=f"file://{tmp_path_factory.mktemp('clean')}/lake")
    clean = config_for(weir_config, clean_lake)
    append_raw(spark, clean_lake, FIRST)
    rebuild(spark, clean, CUTOFF_1, MODE_FULL)
    append_raw(spark, clean_lake, LATER)
    rebuild(spark, clean, CUTOFF_2)
    run_merge(spark, clean)
    return clean_lake


@pytest.mark.slow
@pytest.mark.parametrize(
    "point", [crashpoints.BATCH_INDEX_COMMITTED, crashpoints.BATCH_BEFORE_RECORD]
)
def test_a_rebuild_killed_before_its_record_restarts_to_a_clean_runs_state(
    spark: SparkSession, weir_config: WeirConfig, clean_lake: LakeLayout, tmp_path: Path, point: str
) -> None:
    lake = LakeLayout(root=f"file://{tmp_path}/lake")
    config = config_for(weir_config, lake)
    append_raw(spark, lake, FIRST)
    first = rebuild(spark, config, CUTOFF_1, MODE_FULL)
    served = run_merge(spark, config)
    append_raw(spark, lake, LATER)

    killed_rebuild(config, tmp_path, point, "--cutoff", f"2026-{CUTOFF_2}Z")

    # Nothing recorded; whatever the killed run committed, the merge does not publish it: it
    # keeps serving the recorded run's horizon with the view version that run recorded.
    assert [run.run_id for run in batch_runs(spark, lake)] == [first.run_id]
    if point == crashpoints.BATCH_BEFORE_RECORD:
        assert table_version(spark, lake.batch) == first.view_version + 1  # committed, unrecorded
    after_crash = run_merge(spark, config)
    assert (after_crash.horizon, after_crash.batch_version) == (first.horizon, first.view_version)
    assert after_crash.serving_version == served.serving_version  # nothing new published

    # The restart: the same run again, in a healthy process.
    again = rebuild(spark, config, CUTOFF_2)
    assert again.status == RUN_SUCCEEDED
    published = run_merge(spark, config)
    assert (published.horizon, published.batch_version) == (again.horizon, again.view_version)

    assert_df_equality(view(spark, lake), view(spark, clean_lake), ignore_row_order=True)
    assert_df_equality(
        event_index(spark, lake), event_index(spark, clean_lake), ignore_row_order=True
    )
    columns = [
        c for c in spark.read.format("delta").load(lake.serving).columns if c != "computed_at"
    ]
    assert_df_equality(
        spark.read.format("delta").load(lake.serving).select(*columns),
        spark.read.format("delta").load(clean_lake.serving).select(*columns),
        ignore_row_order=True,
    )
    assert [run.status for run in merge_runs(spark, lake)] == [RUN_SUCCEEDED] * 3


def test_a_second_rebuild_while_one_runs_is_refused_naming_the_first(
    spark: SparkSession,
    weir_config: WeirConfig,
    lake: LakeLayout,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The running rebuild: the batch fence, held by a live process on another host.
    config = config_for(weir_config, lake)
    append_raw(spark, lake, FIRST)
    running = acquire(LocalFenceStore(lake.writer_fences), BATCH_FENCE, 90, host="another-host")

    capsys.readouterr()
    code = main(
        [
            "batch",
            "rebuild",
            "--conf",
            write_conf(config, tmp_path),
            "--cutoff",
            "2026-03-01T12:00:00Z",
        ]
    )

    assert code == 1
    error = " ".join(capsys.readouterr().err.split())
    assert f"batch is held by {running.holder}" in error, error
    assert table_version(spark, lake.batch) is None  # nothing read, nothing written
    assert batch_runs(spark, lake) == []
