"""The serving layer (docs/serving.md): the unified telemetry_minute table.

BATCH and SPEED are tiny Delta tables built directly (MINUTE_SCHEMA rows), and the horizon
comes from a `_control/batch_runs` row, as the batch layer records it. Rows are written with a
fixed ``computed_at``, so expected tables compare exactly.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Optional

import pytest
from chispa import assert_df_equality
from delta.exceptions import ConcurrentAppendException
from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from weir import delta
from weir.cli import main
from weir.config import WeirConfig
from weir.control import (
    MODE_RANGE,
    RUN_SUCCEEDED,
    merge_runs,
)
from weir.delta import table_version
from weir.errors import EXIT_BAD_CONFIG, EXIT_OK, WeirError
from weir.lake import LakeLayout, local_path
from weir.quality.outcomes import CheckOutcome
from weir.quality.results import append_results
from weir.schemas import (
    LAYER_BATCH,
    LAYER_SPEED,
    MINUTE_KEY,
    MINUTE_SCHEMA,
)
from weir.serving import changes, merge
from weir.serving.merge import changed_dates, run_merge
from weir.serving.rule import SCOPE_FULL, SCOPE_INCREMENTAL, SCOPE_NONE

from .builders import (
    COMPUTED,
    D1,
    D2,
    D3,
    H1,
    JOB,
    MINUTE,
    SPEED_ROWS,
    UTC,
    assert_unified,
    at,
    batch_run,
    config_for,
    files_by_date,
    frame,
    minute,
    replace_dates,
    unified,
    upsert,
    versions,
    write_conf,
    write_view,
)

# --- The scope of a merge (pure) ----------------------------------------------------------------


# --- Change detection on a Delta log --------------------------------------------------------


def test_changed_dates_reads_data_changes_between_two_versions(
    spark: SparkSession, lake: LakeLayout
) -> None:
    write_view(
        spark,
        lake.batch,
        [minute("a", "02-27T08:00", 1, LAYER_BATCH), minute("a", "02-28T08:00", 1, LAYER_BATCH)],
    )
    first = table_version(spark, lake.batch)
    replace_dates(spark, lake.batch, D2, [minute("a", "02-28T08:00", 2, LAYER_BATCH)])
    second = table_version(spark, lake.batch)
    assert changed_dates(spark, lake.batch, first, second) == {D2}
    assert changed_dates(spark, lake.batch, second, second) == frozenset()
    frame(spark, [minute("b", "02-27T09:00", 1, LAYER_BATCH)]).write.format("delta").mode(
        "append"
    ).save(lake.batch)
    third = table_version(spark, lake.batch)
    assert changed_dates(spark, lake.batch, first, third) == {D1, D2}
    # Compaction rewrites D1's two files into one but changes no data (dataChange=false).
    DeltaTable.forPath(spark, lake.batch).optimize().executeCompaction()
    compacted = table_version(spark, lake.batch)
    assert compacted == third + 1
    assert changed_dates(spark, lake.batch, third, compacted) == frozenset()
    # Unknowable: a new table, a re-created one, a commit file gone from the log.
    assert changed_dates(spark, lake.batch, None, second) is None
    assert changed_dates(spark, lake.batch, second, first) is None
    assert changed_dates(spark, lake.speed, None, None) == frozenset()
    Path(local_path(lake.batch), "_delta_log", f"{second:020d}.json").unlink()
    assert changed_dates(spark, lake.batch, first, second) is None


# --- Merges on a lake ---------------------------------------------------------------------------

# SPEED and BATCH as of batch run 1 (H1 = 10:00): the boundary and a speed-only window <= H.

BATCH_ROWS_1 = [
    minute("veh-1", "09:58", 2, LAYER_BATCH),
    minute("veh-1", "09:59", 3, LAYER_BATCH),
    minute("veh-1", "10:00", 9, LAYER_BATCH),  # beyond H1: not published yet
]


UNIFIED_1 = [
    minute("veh-1", "09:58", 2, LAYER_BATCH),
    minute("veh-1", "09:59", 3, LAYER_BATCH),
    minute("veh-1", "10:00", 4, LAYER_SPEED),
    minute("veh-1", "10:01", 5, LAYER_SPEED),
    minute("veh-2", "10:00", 6, LAYER_SPEED),
]


# Batch run 2 (H2 = 10:01) knows veh-1 10:00 better than speed, and has no veh-2 10:00.
H2 = H1 + MINUTE


BATCH_ROWS_2 = [
    minute("veh-1", "09:58", 2, LAYER_BATCH),
    minute("veh-1", "09:59", 3, LAYER_BATCH),
    minute("veh-1", "10:00", 8, LAYER_BATCH),
    minute("veh-1", "10:01", 10, LAYER_BATCH),  # beyond H2
]


UNIFIED_2 = [
    minute("veh-1", "09:58", 2, LAYER_BATCH),
    minute("veh-1", "09:59", 3, LAYER_BATCH),
    minute("veh-1", "10:00", 8, LAYER_BATCH),
    minute("veh-1", "10:01", 5, LAYER_SPEED),
]


@pytest.fixture(scope="module")
def lake_templates(
    spark: SparkSession, weir_config: WeirConfig, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Lakes built once for the module, copied into each test that starts from them.

    ``inputs_1``: SPEED_ROWS, BATCH_ROWS_1 and batch run 1 (H1). ``merged_1``: the same after
    one merge, so the unified table holds UNIFIED_1. A Delta table's log holds relative paths
    only, so a copied folder is the same table at a new place.
    """
    base = tmp_path_factory.mktemp("serving-templates")
    inputs = LakeLayout(root=f"file://{base}/inputs_1")
    write_view(spark, inputs.speed, SPEED_ROWS)
    write_view(spark, inputs.batch, BATCH_ROWS_1)
    batch_run(spark, inputs, H1)
    shutil.copytree(base / "inputs_1", base / "merged_1")
    run_merge(spark, config_for(weir_config, LakeLayout(root=f"file://{base}/merged_1")))
    return {name: base / name for name in ("inputs_1", "merged_1")}


@pytest.fixture
def inputs_1(lake_templates: dict[str, Path], lake: LakeLayout) -> None:
    """This test's lake holds SPEED_ROWS, BATCH_ROWS_1 and batch run 1 (H1), not merged yet."""
    shutil.copytree(lake_templates["inputs_1"], local_path(lake.root))


@pytest.fixture
def merged_1(lake_templates: dict[str, Path], lake: LakeLayout) -> None:
    """This test's lake as ``inputs_1`` after one merge: the unified table holds UNIFIED_1."""
    shutil.copytree(lake_templates["merged_1"], local_path(lake.root))


@pytest.mark.usefixtures("merged_1")
def test_merge_hands_windows_from_speed_to_batch_without_loss_or_double_count(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout
) -> None:
    # The first merge (of the module's template lake), as recorded and as published.
    (first,) = merge_runs(spark, lake)
    assert_unified(spark, lake, UNIFIED_1)
    assert (first.scope, first.horizon, first.partitions_replaced) == (SCOPE_FULL, H1, [D3])

    write_view(spark, lake.batch, BATCH_ROWS_2)
    batch_run(spark, lake, H2)
    second = run_merge(spark, config)
    assert_unified(spark, lake, UNIFIED_2)
    assert (second.scope, second.horizon, second.previous_run_id) == (
        SCOPE_INCREMENTAL,
        H2,
        first.run_id,
    )
    # veh-1 10:00 replaced (speed 4 -> batch 8), veh-2 10:00 deleted: batch is authoritative.
    assert (second.rows_written, second.rows_deleted) == (1, 1)
    keys = unified(spark, lake).groupBy(*MINUTE_KEY).count()
    assert keys.where(F.col("count") > 1).count() == 0
    assert unified(spark, lake).agg(F.sum("event_count")).first()[0] == 2 + 3 + 8 + 5


@pytest.mark.usefixtures("merged_1")
def test_merge_rerun_with_the_same_inputs_makes_no_commit(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout
) -> None:
    before = versions(spark, lake.serving)

    again = run_merge(spark, config)

    assert versions(spark, lake.serving) == before
    assert (again.scope, again.partitions_replaced, again.rows_written) == (SCOPE_NONE, [], 0)
    assert again.serving_version == max(before)
    assert_unified(spark, lake, UNIFIED_1)
    assert [run.status for run in merge_runs(spark, lake)] == [RUN_SUCCEEDED, RUN_SUCCEEDED]


def test_the_diff_upserts_new_and_changed_windows_and_deletes_vanished_ones(
    spark: SparkSession,
) -> None:
    current = [
        minute("veh-1", "10:00", 4, LAYER_SPEED),  # unchanged
        minute("veh-1", "10:01", 5, LAYER_SPEED),  # count changes
        minute("veh-2", "10:00", 6, LAYER_SPEED, temp=None),  # null stays null: unchanged
        minute("veh-2", "10:01", 6, LAYER_SPEED, temp=None),  # null becomes a value
        minute("veh-3", "10:00", 7, LAYER_SPEED),  # no longer wanted
    ]
    wanted = [
        current[0],
        minute("veh-1", "10:01", 9, LAYER_SPEED),
        current[2],
        minute("veh-2", "10:01", 6, LAYER_SPEED, temp=21.5),
        minute("veh-4", "10:00", 1, LAYER_SPEED),  # new
    ]

    diff = changes.serving_changes(frame(spark, wanted), frame(spark, current))

    upserts = diff.where(~F.col("_weir_delete")).drop("_weir_delete")
    assert_df_equality(
        upserts,
        frame(spark, wanted[1:2] + wanted[3:]),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    key = [*MINUTE_KEY, "event_date"]
    deletes = diff.where(F.col("_weir_delete")).select(*key)
    assert_df_equality(deletes, frame(spark, current[4:]).select(*key), ignore_nullable=True)


def test_a_merge_from_an_older_baseline_still_publishes_the_rule(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout
) -> None:
    # A merger that missed the latest merge (two loops, a stale caller) passes an older run:
    # its scope is wider, its result the same.
    write_view(spark, lake.speed, SPEED_ROWS)
    oldest = run_merge(spark, config)
    upsert(spark, lake.speed, [minute("veh-1", "10:01", 8, LAYER_SPEED)])
    run_merge(spark, config)
    newest = [minute("veh-1", "10:01", 9, LAYER_SPEED), minute("veh-3", "10:05", 1, LAYER_SPEED)]
    upsert(spark, lake.speed, newest)

    late = run_merge(spark, config, baseline=oldest)

    assert (late.scope, late.previous_run_id) == (SCOPE_INCREMENTAL, oldest.run_id)
    wanted = {(r[0], r[1]): r for r in SPEED_ROWS} | {(r[0], r[1]): r for r in newest}
    assert_unified(spark, lake, list(wanted.values()))
    assert run_merge(spark, config).scope == SCOPE_NONE


def test_merge_before_any_batch_run_serves_speed_only_and_creates_the_table(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout
) -> None:
    write_view(spark, lake.speed, SPEED_ROWS)
    run = run_merge(spark, config)
    assert run.horizon is None and run.batch_version is None
    assert_unified(spark, lake, SPEED_ROWS)


def test_merge_publishes_the_newest_version_of_each_speed_window(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout
) -> None:
    # The speed layer appends a version of each window it changes (docs/streaming.md).
    write_view(spark, lake.speed, SPEED_ROWS)
    later = COMPUTED + timedelta(seconds=5)
    newer = [minute("veh-1", "10:01", 9, LAYER_SPEED, computed_at=later)]
    frame(spark, newer).write.format("delta").mode("append").save(lake.speed)

    run_merge(spark, config)

    assert_unified(spark, lake, [r for r in SPEED_ROWS if r[:2] != newer[0][:2]] + newer)


def test_merge_with_no_input_tables_publishes_an_empty_table(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout
) -> None:
    run = run_merge(spark, config)
    assert run.status == RUN_SUCCEEDED and run.partitions_replaced == []
    assert unified(spark, lake).count() == 0
    assert unified(spark, lake).schema.fieldNames() == MINUTE_SCHEMA.fieldNames()


# Three days: batch on all of them up to H1, speed beyond H1 on the last.
DAYS_BATCH = [
    minute("veh-1", "02-27T08:00", 1, LAYER_BATCH),
    minute("veh-2", "02-27T08:00", 2, LAYER_BATCH),
    minute("veh-1", "02-28T08:00", 3, LAYER_BATCH),
    minute("veh-1", "09:00", 4, LAYER_BATCH),
]


DAYS_SPEED = [minute("veh-1", "10:30", 5, LAYER_SPEED), minute("veh-2", "10:30", 6, LAYER_SPEED)]


def test_merge_after_a_small_change_rewrites_only_the_changed_partition(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout
) -> None:
    write_view(spark, lake.batch, DAYS_BATCH)
    write_view(spark, lake.speed, DAYS_SPEED)
    batch_run(spark, lake, H1)
    run_merge(spark, config)
    files = files_by_date(spark, lake)
    assert sorted(files) == ["2026-02-27", "2026-02-28", "2026-03-01"]

    # The stream updates one window beyond H.
    upsert(spark, lake.speed, [minute("veh-1", "10:30", 7, LAYER_SPEED)])
    run = run_merge(spark, config)

    assert (run.scope, run.partitions_replaced) == (SCOPE_INCREMENTAL, [D3])
    assert (run.rows_written, run.rows_deleted, run.files_removed) == (1, 0, 1)
    after = files_by_date(spark, lake)
    assert after["2026-02-27"] == files["2026-02-27"]
    assert after["2026-02-28"] == files["2026-02-28"]
    assert after["2026-03-01"] != files["2026-03-01"]
    metrics = DeltaTable.forPath(spark, lake.serving).history(1).first()["operationMetrics"]
    assert (metrics["numTargetRowsUpdated"], metrics["numTargetRowsInserted"]) == ("1", "0")

    # A repair of one old date (a range run: H does not move) touches that date only.
    replace_dates(spark, lake.batch, D1, [minute("veh-1", "02-27T08:00", 11, LAYER_BATCH)])
    batch_run(spark, lake, H1 + timedelta(hours=1), mode=MODE_RANGE)
    repair = run_merge(spark, config)

    assert (repair.horizon, repair.partitions_replaced) == (H1, [D1])
    assert (repair.rows_written, repair.rows_deleted) == (1, 1)
    final = files_by_date(spark, lake)
    assert final["2026-02-28"] == files["2026-02-28"]
    assert final["2026-03-01"] == after["2026-03-01"]
    assert_unified(
        spark,
        lake,
        [
            minute("veh-1", "02-27T08:00", 11, LAYER_BATCH),
            minute("veh-1", "02-28T08:00", 3, LAYER_BATCH),
            minute("veh-1", "09:00", 4, LAYER_BATCH),
            minute("veh-1", "10:30", 7, LAYER_SPEED),
            minute("veh-2", "10:30", 6, LAYER_SPEED),
        ],
    )


# --- The data-quality gate -----------------------------------------------------------------------


def judge(spark: SparkSession, lake: LakeLayout, run_id: str, passed: bool) -> None:
    """Record one critical data-quality result for batch run ``run_id``."""
    outcome = CheckOutcome(
        suite="batch_run",
        table_name="_control/batch_runs",
        table_version=None,
        expectation="expect_column_values_to_be_between(reconciliation)",
        severity="critical",
        success=passed,
        observed_value="0" if passed else "3",
        threshold="0",
    )
    append_results(spark, lake, run_id, datetime.now(UTC), [outcome])


@pytest.mark.usefixtures("merged_1")
def test_the_gate_keeps_serving_the_previous_batch_run_when_a_critical_check_failed(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout
) -> None:
    assert config.dq.gate == "block"
    write_view(spark, lake.batch, [minute("veh-1", "09:58", 99, LAYER_BATCH)])  # a bad rewrite
    batch_run(spark, lake, H2)
    judge(spark, lake, f"batch-{H2:%H%M}-full", passed=False)
    upsert(spark, lake.speed, [minute("veh-3", "10:05", 7, LAYER_SPEED)])  # the stream goes on

    blocked = run_merge(spark, config)

    # The bad batch rows never reach the table; the new speed window does.
    assert_unified(spark, lake, [*UNIFIED_1, minute("veh-3", "10:05", 7, LAYER_SPEED)])
    assert (blocked.horizon, blocked.batch_run_id) == (H1, f"batch-{H1:%H%M}-full")
    assert blocked.blocked_batch_run_id == f"batch-{H2:%H%M}-full"

    # The next batch run passes its checks: it is served.
    write_view(spark, lake.batch, BATCH_ROWS_2)
    batch_run(spark, lake, H2 + MINUTE)
    judge(spark, lake, f"batch-{H2 + MINUTE:%H%M}-full", passed=True)
    served = run_merge(spark, config)
    assert (served.horizon, served.blocked_batch_run_id) == (H2 + MINUTE, None)
    # Every window of BATCH_ROWS_2 ends by H2 + 1 minute: all from batch now.
    assert_unified(spark, lake, [*BATCH_ROWS_2, minute("veh-3", "10:05", 7, LAYER_SPEED)])


@pytest.mark.usefixtures("merged_1")
def test_a_blocked_batch_run_with_nothing_else_new_leaves_the_unified_table_untouched(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout
) -> None:
    before = table_version(spark, lake.serving)
    write_view(spark, lake.batch, BATCH_ROWS_2)
    batch_run(spark, lake, H2)
    judge(spark, lake, f"batch-{H2:%H%M}-full", passed=False)

    blocked = run_merge(spark, config)

    assert table_version(spark, lake.serving) == before  # no commit at all
    assert (blocked.scope, blocked.horizon) == (SCOPE_NONE, H1)
    assert_unified(spark, lake, UNIFIED_1)


@pytest.mark.usefixtures("merged_1")
def test_the_gate_lets_a_batch_run_through_when_its_checks_passed_or_it_is_off(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout
) -> None:
    write_view(spark, lake.batch, BATCH_ROWS_2)
    batch_run(spark, lake, H2)
    judge(spark, lake, f"batch-{H2:%H%M}-full", passed=False)
    off = config.model_copy(update={"dq": config.dq.model_copy(update={"gate": "off"})})

    served = run_merge(spark, off)

    assert_unified(spark, lake, UNIFIED_2)
    assert (served.horizon, served.blocked_batch_run_id) == (H2, None)


# --- Conflicts and concurrent writers -----------------------------------------------------------


def _conflict() -> ConcurrentAppendException:
    return ConcurrentAppendException(
        "Files were added to partition [event_date=2026-03-01] by a concurrent update.", "(test)"
    )


@pytest.mark.usefixtures("inputs_1")
def test_merge_retries_after_a_conflicting_commit_and_succeeds(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = merge.apply_changes
    calls = []

    def conflicting_once(*args, **kwargs) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise _conflict()
        real(*args, **kwargs)

    monkeypatch.setattr(merge, "apply_changes", conflicting_once)
    pauses: list[float] = []
    run = run_merge(spark, config, sleep=pauses.append)

    assert (run.status, run.attempts, len(calls), len(pauses)) == (RUN_SUCCEEDED, 2, 2, 1)
    assert 0 < pauses[0] <= delta.BACKOFF_MAX_SECONDS * 1.5
    assert_unified(spark, lake, UNIFIED_1)


def test_merge_gives_up_after_bounded_attempts_and_records_the_failure(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_view(spark, lake.speed, SPEED_ROWS)

    def always_conflicting(*args, **kwargs) -> None:
        raise _conflict()

    monkeypatch.setattr(merge, "apply_changes", always_conflicting)
    pauses: list[float] = []
    with pytest.raises(WeirError, match="lost 3 times to concurrent commits"):
        run_merge(spark, config, sleep=pauses.append, attempts=3)

    assert len(pauses) == 2 and pauses[1] > pauses[0]
    (failed,) = merge_runs(spark, lake)
    assert (failed.status, failed.attempts) == ("failed", 3)
    assert "ConcurrentAppendException" in failed.error
    assert unified(spark, lake).count() == 0  # created empty, never written


@pytest.mark.usefixtures("merged_1")
def test_a_foreign_commit_between_diff_and_commit_is_detected_and_repaired(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    upsert(spark, lake.speed, [minute("veh-1", "10:01", 15, LAYER_SPEED)])
    real = merge.apply_changes
    calls = []

    def someone_deletes_first(*args, **kwargs) -> None:
        calls.append(1)
        if len(calls) == 1:  # a real commit on the unified table lands meanwhile
            DeltaTable.forPath(spark, lake.serving).delete("device_id = 'veh-2'")
        real(*args, **kwargs)

    monkeypatch.setattr(merge, "apply_changes", someone_deletes_first)
    run = run_merge(spark, config, sleep=lambda _: None)

    assert run.attempts == 2
    expected = [r for r in UNIFIED_1 if r[1] != at("10:01")]
    assert_unified(spark, lake, [*expected, minute("veh-1", "10:01", 15, LAYER_SPEED)])


@pytest.mark.usefixtures("inputs_1")
def test_merge_beside_a_writer_upserting_speed_reads_the_version_it_pinned(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worst moment for a stream's micro-batch to land: after the merge pinned SPEED's
    # version, before it reads SPEED. Injected there, not raced from a thread, so it is
    # certain to happen at that moment.
    late = minute("veh-3", "10:05", 101, LAYER_SPEED)
    real = merge.read_minutes

    def stream_commits_first(session: SparkSession, path: str, version: Optional[int]):
        if path == lake.speed:
            upsert(spark, lake.speed, [late])
        return real(session, path, version)

    monkeypatch.setattr(merge, "read_minutes", stream_commits_first)
    run = run_merge(spark, config)
    monkeypatch.undo()

    assert table_version(spark, lake.speed) == run.speed_version + 1  # the writer went on
    assert_unified(spark, lake, UNIFIED_1)  # ...unseen: the merge read its pinned version
    caught_up = run_merge(spark, config)  # the next merge catches up
    assert (caught_up.scope, caught_up.partitions_replaced) == (SCOPE_INCREMENTAL, [D3])
    assert_unified(spark, lake, [*UNIFIED_1, late])


# --- Readers and entry points -------------------------------------------------------------------


@pytest.mark.usefixtures("merged_1")
def test_unified_table_reads_the_same_with_the_deltalake_package(
    spark: SparkSession, lake: LakeLayout
) -> None:
    from deltalake import DeltaTable as RustDeltaTable

    def comparable(records: list[dict]) -> list[tuple]:
        def value(v: object) -> object:
            if isinstance(v, datetime):
                return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
            return v

        return sorted(tuple(value(r[c]) for c in MINUTE_SCHEMA.fieldNames()) for r in records)

    rust = RustDeltaTable(local_path(lake.serving)).to_pyarrow_table().to_pylist()
    # Spark's collect() gives naive datetimes in the Python process's zone: read micros.
    timestamps = ("window_start", "window_end", "computed_at")
    spark_rows = [
        {
            **r.asDict(),
            **{
                c: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=r[f"_{c}"])
                for c in timestamps
            },
        }
        for r in unified(spark, lake)
        .select("*", *(F.unix_micros(c).alias(f"_{c}") for c in timestamps))
        .collect()
    ]
    assert len(rust) == len(UNIFIED_1)
    assert comparable(rust) == comparable(spark_rows)


def test_weir_merge_command_publishes_and_exits_0(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout, tmp_path: Path
) -> None:
    write_view(spark, lake.speed, SPEED_ROWS)
    assert main(["merge", "--conf", write_conf(config, tmp_path)]) == EXIT_OK
    assert_unified(spark, lake, SPEED_ROWS)


def test_merge_job_with_a_bad_configuration_exits_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("env: local\nlake: {}\n", "utf-8")
    done = subprocess.run(
        [sys.executable, str(JOB), "--conf", str(bad)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == EXIT_BAD_CONFIG, done.stderr
    assert "lake.root" in done.stderr
