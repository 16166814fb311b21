"""The batch layer (docs/batch.md) runs on small RAW Delta tables built in a tmp lake.

Metric values are exact binary fractions, so sums and averages do not depend on the order
Spark adds them in and views from different runs compare exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from weir.cli import main
from weir.config import ConfigError, WeirConfig
from weir.control import (
    MODE_FULL,
    MODE_INCREMENTAL,
    MODE_RANGE,
    RUN_FAILED,
    RUN_SUCCEEDED,
    BatchRun,
    batch_runs,
)
from weir.errors import EXIT_OK, EXIT_RUNTIME_FAILURE, WeirError
from weir.lake import LakeLayout, local_path

from .builders import (
    VIEW_SCHEMA,
    append_raw,
    assert_view,
    config_for,
    event_index,
    expected_view,
    fault,
    index_commits,
    index_of_a_full_dedup,
    minute,
    partition_files,
    rebuild,
    record,
    utc,
    view,
    write_conf,
)

# --- One full run on a corpus with duplicates and faults ---------------------------------------

CORPUS_CUTOFF = "2026-03-02T12:00:00Z"


# epoch milliseconds of 2026-03-02T08:00:30Z
E6_EPOCH_MS = 1772438430000


CORPUS = [
    record("e1", "dev-a", "03-01T10:00:05", "03-01T10:00:30", 1, temp=20.0, status="parked"),
    record("e2", "dev-a", "03-01T10:00:40", "03-01T10:01:00", 2, temp=22.0),
    # a producer retry of e1 (same content, received later): counted once
    record("e1", "dev-a", "03-01T10:00:05", "03-01T10:05:00", 7, "1", 20.0, "parked"),
    # conflicting twins received at the same time: offset 9 is before offset 10 (numeric order)
    record("e3", "dev-a", "03-01T10:01:10", "03-01T10:02:00", 10, temp=30.0),
    record("e3", "dev-a", "03-01T10:01:10", "03-01T10:02:00", 9, temp=31.0),
    record("e4", "dev-b", "03-02T08:00:00", "03-02T08:00:10", 3, temp=10.0),
    record("e6", "dev-b", E6_EPOCH_MS, "03-02T08:01:00", 4, temp=12.0),
    fault('{"event_id": "e7", "device_id": ', "03-02T08:02:00", 5),
    record("e8", "bad device!", "03-02T08:00:00", "03-02T08:02:00", 6),
    record("e9", "dev-b", "03-02T08:00:00", "03-02T08:02:00", 8, temp=500.0),
    # received exactly at the cutoff: not read by this run
    record("e5", "dev-b", "03-02T11:59:00", CORPUS_CUTOFF, 11, temp=40.0),
]


def test_batch_view_equals_expected_rows_on_a_corpus_with_duplicates_and_faults(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout
) -> None:
    append_raw(spark, lake, CORPUS)
    run = rebuild(spark, config, CORPUS_CUTOFF, MODE_FULL)
    assert_view(
        view(spark, lake),
        expected_view(
            spark,
            [
                minute("dev-a", "03-01T10:00:00", 2, (20.0, 22.0), "parked"),
                minute("dev-a", "03-01T10:01:00", 1, (31.0,)),
                minute("dev-b", "03-02T08:00:00", 2, (10.0, 12.0)),
            ],
        ),
    )
    recorded = batch_runs(spark, lake)
    assert recorded == [run]
    assert (run.status, run.mode, run.error) == (RUN_SUCCEEDED, MODE_FULL, None)
    assert (run.cutoff, run.horizon) == (utc(CORPUS_CUTOFF), utc("2026-03-02T11:50:00Z"))
    assert run.raw_version == 0
    assert (run.records_in, run.valid, run.quarantined) == (10, 7, 3)
    assert (run.duplicates, run.conflicting_duplicates) == (2, 1)
    assert (run.windows_written, run.view_version, run.dates_rebuilt) == (3, 0, None)
    assert run.started_at <= run.finished_at


def test_missing_raw_table_fails_exit_1_and_records_a_failed_run(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout, tmp_path: Path
) -> None:
    conf = write_conf(config, tmp_path)
    code = main(["batch", "rebuild", "--conf", conf, "--cutoff", "2026-03-01T10:00:00Z"])
    assert code == EXIT_RUNTIME_FAILURE
    (failed,) = batch_runs(spark, lake)
    assert (failed.status, failed.raw_version, failed.windows_written) == (RUN_FAILED, None, None)
    assert "no raw table" in failed.error
    assert not Path(local_path(lake.batch)).exists()


def test_no_raw_record_before_the_cutoff_fails_and_writes_no_view(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout
) -> None:
    append_raw(spark, lake, CORPUS[:1])  # ingested 2026-03-01T10:00:30Z
    with pytest.raises(WeirError, match="no record ingested before"):
        rebuild(spark, config, "2026-03-01T10:00:00Z")
    (failed,) = batch_runs(spark, lake)
    assert (failed.status, failed.raw_version) == (RUN_FAILED, 0)
    assert not Path(local_path(lake.batch)).exists()


# --- Runs over time: late events, twins across runs, lagging commits ---------------------------

CUTOFF_1 = "2026-03-03T00:00:00Z"


CUTOFF_2 = "2026-03-03T01:00:00Z"


CUTOFF_3 = "2026-03-03T02:00:00Z"


BEFORE_RUN_1 = [
    record("z1", "dev-z", "02-27T09:00:00", "02-27T09:00:10", 1, temp=1.0),
    record("a1", "dev-a", "03-01T09:00:10", "03-01T09:00:20", 2, temp=20.0),
    record("b1", "dev-b", "03-02T10:00:10", "03-02T10:00:20", 3, temp=10.0),
    record("m1", "dev-m", "03-02T11:00:00", "03-02T11:00:05", 4, temp=50.0),
    # already in RAW when run 1 reads it, but received after run 1's cutoff
    record("q1", "dev-q", "03-01T12:00:00", "03-03T00:10:00", 5, temp=5.0),
]


AFTER_RUN_1 = [
    # a late event for 2026-03-01, received after run 1
    record("a2", "dev-a", "03-01T09:00:50", "03-03T00:30:00", 6, temp=22.0),
    # late retries of events run 1 counted: never counted twice, their dates untouched
    record("b1", "dev-b", "03-02T10:00:10", "03-03T00:40:00", 7, temp=10.0),
    record("z1", "dev-z", "02-27T09:00:00", "03-03T00:45:00", 8, temp=1.0),
    # a conflicting twin of a1 on another day, received later: the first received (a1) wins
    record("a1", "dev-a", "02-26T09:00:00", "03-03T00:50:00", 9, temp=99.0),
    # committed after run 1 but stamped before its cutoff (a slow or replayed micro-batch):
    # a twin of m1 received BEFORE m1, so it wins and moves m1 from 2026-03-02 to 2026-02-28
    record("m1", "dev-m", "02-28T23:59:30", "03-02T11:00:01", 1, "2", temp=55.0),
    # received after every cutoff below: never read
    record("n1", "dev-n", "03-02T10:00:00", "03-03T05:00:00", 10, temp=7.0),
]


# after the full run with CUTOFF_2: only another late retry of z1, so no winner changes
RETRY_ONLY = [record("z1", "dev-z", "02-27T09:00:00", "03-03T01:30:00", 11, temp=1.0)]


VIEW_AFTER_RUN_1 = [
    minute("dev-z", "02-27T09:00:00", 1, (1.0,)),
    minute("dev-a", "03-01T09:00:00", 1, (20.0,)),
    minute("dev-b", "03-02T10:00:00", 1, (10.0,)),
    minute("dev-m", "03-02T11:00:00", 1, (50.0,)),
]


VIEW_AFTER_RUN_2 = [
    minute("dev-z", "02-27T09:00:00", 1, (1.0,)),
    minute("dev-m", "02-28T23:59:00", 1, (55.0,)),
    minute("dev-a", "03-01T09:00:00", 2, (20.0, 22.0)),
    minute("dev-q", "03-01T12:00:00", 1, (5.0,)),
    minute("dev-b", "03-02T10:00:00", 1, (10.0,)),
]


@dataclass
class History:
    """What a sequence of runs left behind, for the tests below to check."""

    config: WeirConfig
    lake: LakeLayout
    run_1: BatchRun
    view_1: list
    files_1: dict[str, set[str]]
    run_2: BatchRun
    view_2: list
    files_2: dict[str, set[str]]
    rerun: BatchRun
    view_rerun: list
    full: BatchRun
    view_full: list
    retry_only: BatchRun
    view_retry_only: list
    index_2: list  # batch/events after run 2
    index_retry_only: list  # batch/events after the last run


@pytest.fixture(scope="module")
def history(
    spark: SparkSession, weir_config: WeirConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[History]:
    """Run 1 (incremental, first: so full), new records, run 2 (incremental), run 2 again
    with the same cutoff, a full run with the same cutoff, then a late retry and a run."""
    lake = LakeLayout(root=f"file://{tmp_path_factory.mktemp('history')}/lake")
    config = config_for(weir_config, lake)
    append_raw(spark, lake, BEFORE_RUN_1)
    run_1 = rebuild(spark, config, CUTOFF_1)
    view_1, files_1 = view(spark, lake).collect(), partition_files(spark, lake)
    append_raw(spark, lake, AFTER_RUN_1)
    run_2 = rebuild(spark, config, CUTOFF_2)
    view_2, files_2 = view(spark, lake).collect(), partition_files(spark, lake)
    index_2 = event_index(spark, lake).collect()
    rerun = rebuild(spark, config, CUTOFF_2)
    view_rerun = view(spark, lake).collect()
    full = rebuild(spark, config, CUTOFF_2, MODE_FULL)
    view_full = view(spark, lake).collect()
    append_raw(spark, lake, RETRY_ONLY)
    retry_only = rebuild(spark, config, CUTOFF_3)
    view_retry_only = view(spark, lake).collect()
    index_retry_only = event_index(spark, lake).collect()
    yield History(
        config=config,
        lake=lake,
        run_1=run_1,
        view_1=view_1,
        files_1=files_1,
        run_2=run_2,
        view_2=view_2,
        files_2=files_2,
        rerun=rerun,
        view_rerun=view_rerun,
        full=full,
        view_full=view_full,
        retry_only=retry_only,
        view_retry_only=view_retry_only,
        index_2=index_2,
        index_retry_only=index_retry_only,
    )


def rows_frame(spark: SparkSession, rows: list) -> DataFrame:
    return spark.createDataFrame(rows, VIEW_SCHEMA)


def test_first_incremental_run_rebuilds_everything(spark: SparkSession, history: History) -> None:
    assert (history.run_1.mode, history.run_1.baseline_run_id) == (MODE_FULL, None)
    assert_view(rows_frame(spark, history.view_1), expected_view(spark, VIEW_AFTER_RUN_1))


def test_late_event_ingested_after_run_appears_after_next_run_in_its_window(
    spark: SparkSession, history: History
) -> None:
    assert_view(rows_frame(spark, history.view_2), expected_view(spark, VIEW_AFTER_RUN_2))


def test_incremental_run_equals_a_full_rebuild_with_the_same_cutoff(
    spark: SparkSession, history: History
) -> None:
    assert_view(rows_frame(spark, history.view_2), rows_frame(spark, history.view_full))
    assert history.full.mode == MODE_FULL
    counts = ("records_in", "valid", "quarantined", "duplicates", "conflicting_duplicates")
    assert [getattr(history.run_2, c) for c in counts] == [getattr(history.full, c) for c in counts]
    assert (history.run_2.records_in, history.run_2.duplicates) == (10, 4)
    assert history.run_2.conflicting_duplicates == 2  # a1 and m1


def test_incremental_run_replaces_only_dates_whose_winners_changed(history: History) -> None:
    run_2 = history.run_2
    assert (run_2.mode, run_2.baseline_run_id) == (MODE_INCREMENTAL, history.run_1.run_id)
    # m1's lagging twin was stamped before run 1's cutoff: the changes start there
    assert run_2.changes_since == utc("2026-03-02T11:00:01Z")
    # m1 left 2026-03-02 for 2026-02-28; a late event joined 2026-03-01. Late retries
    # (z1, b1) and a1's losing twin (2026-02-26) change no winner, so no date of theirs.
    assert run_2.dates_rebuilt == [date(2026, 2, 28), date(2026, 3, 1), date(2026, 3, 2)]
    assert history.files_2["2026-02-27"] == history.files_1["2026-02-27"]
    for day in ("2026-03-01", "2026-03-02"):
        assert history.files_2[day].isdisjoint(history.files_1[day])
    assert "2026-02-26" not in history.files_2
    assert run_2.windows_written == 4
    assert run_2.view_version == history.run_1.view_version + 1


def test_rerun_with_the_same_cutoff_changes_nothing(spark: SparkSession, history: History) -> None:
    rerun = history.rerun
    assert (rerun.status, rerun.mode, rerun.baseline_run_id) == (
        RUN_SUCCEEDED,
        MODE_INCREMENTAL,
        history.run_2.run_id,
    )
    assert (rerun.dates_rebuilt, rerun.windows_written, rerun.view_version) == ([], 0, None)
    assert (rerun.raw_version, rerun.changes_since) == (history.run_2.raw_version, utc(CUTOFF_2))
    counts = ("records_in", "valid", "quarantined", "duplicates", "conflicting_duplicates")
    assert [getattr(rerun, c) for c in counts] == [getattr(history.run_2, c) for c in counts]
    assert_view(rows_frame(spark, history.view_rerun), rows_frame(spark, history.view_2))


def test_late_retry_alone_changes_no_date(spark: SparkSession, history: History) -> None:
    retry_only = history.retry_only
    assert (retry_only.mode, retry_only.baseline_run_id) == (MODE_INCREMENTAL, history.full.run_id)
    assert (retry_only.records_in, retry_only.duplicates) == (11, 5)
    assert (retry_only.dates_rebuilt, retry_only.windows_written) == ([], 0)
    assert retry_only.view_version is None
    assert_view(rows_frame(spark, history.view_retry_only), expected_view(spark, VIEW_AFTER_RUN_2))


def test_incremental_runs_fold_new_records_into_the_index_as_a_full_dedup_would(
    spark: SparkSession, history: History
) -> None:
    schema = event_index(spark, history.lake).schema
    for rows, cutoff in ((history.index_2, CUTOFF_2), (history.index_retry_only, CUTOFF_3)):
        assert_df_equality(
            spark.createDataFrame(rows, schema),
            index_of_a_full_dedup(spark, history.lake, cutoff),
            ignore_row_order=True,
            ignore_nullable=True,
        )


def test_an_incremental_run_rewrites_only_the_index_dates_its_new_records_touch(
    spark: SparkSession, history: History
) -> None:
    commits = index_commits(spark, history.lake)
    # Full runs (the first run, the explicit --full) write the whole index.
    assert "predicate" not in commits[history.run_1.run_id]
    assert "predicate" not in commits[history.full.run_id]
    # Run 2 read the index, not all history: it replaced the dates m1 left and landed on,
    # the dates of a2 and q1, and those of the events whose late twins add copies (z1, b1, a1).
    assert "2026-02-26" not in commits[history.run_2.run_id]["predicate"]
    for day in ("2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"):
        assert day in commits[history.run_2.run_id]["predicate"]
    # A late retry: only its event's date, for the copy count; the view is untouched.
    assert "2026-02-27" in commits[history.retry_only.run_id]["predicate"]
    assert "2026-03-01" not in commits[history.retry_only.run_id]["predicate"]
    # The rerun changed nothing and kept the index run 2 left.
    assert history.rerun.run_id not in commits
    assert history.rerun.index_version == history.run_2.index_version
    assert history.retry_only.index_version > history.full.index_version


def file_statistics(table: str) -> list[dict]:
    """The statistics of every file the table's commits added, from its Delta log."""
    stats = []
    for commit in sorted(Path(local_path(table), "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            added = json.loads(line).get("add")
            if added is not None:
                stats.append(json.loads(added["stats"]))
    return stats


def test_the_event_index_keeps_no_column_statistics_and_the_view_keeps_them(
    spark: SparkSession, history: History
) -> None:
    """Nothing reads the index by column statistics (they cost 10-15% of its write); the
    view's readers filter on device and window, so its files keep them."""
    index = DeltaTable.forPath(spark, history.lake.batch_events).detail().first()
    assert index["properties"]["delta.dataSkippingNumIndexedCols"] == "0"
    index_stats = file_statistics(history.lake.batch_events)
    assert index_stats and all(set(stats) == {"numRecords"} for stats in index_stats)
    view_stats = file_statistics(history.lake.batch)
    assert view_stats and all("device_id" in stats["minValues"] for stats in view_stats)


def test_an_index_changed_behind_the_last_run_is_not_trusted(
    spark: SparkSession, weir_config: WeirConfig, tmp_path: Path
) -> None:
    lake = LakeLayout(root=f"file://{tmp_path}/lake")
    config = config_for(weir_config, lake)
    append_raw(spark, lake, BEFORE_RUN_1)
    rebuild(spark, config, CUTOFF_1)
    # Compaction keeps the index trusted; a foreign write (a row deleted) does not.
    DeltaTable.forPath(spark, lake.batch_events).optimize().executeCompaction()
    append_raw(spark, lake, AFTER_RUN_1[:1])
    compacted = rebuild(spark, config, CUTOFF_2)
    DeltaTable.forPath(spark, lake.batch_events).delete("event_id = 'b1'")
    append_raw(spark, lake, AFTER_RUN_1[1:])
    tampered = rebuild(spark, config, CUTOFF_2)

    commits = index_commits(spark, lake)
    assert "predicate" in commits[compacted.run_id]  # folded into the index
    assert "predicate" not in commits[tampered.run_id]  # rebuilt from all history
    assert tampered.mode == MODE_INCREMENTAL
    assert_df_equality(
        event_index(spark, lake),
        index_of_a_full_dedup(spark, lake, CUTOFF_2),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    assert_view(view(spark, lake), expected_view(spark, VIEW_AFTER_RUN_2))


def test_every_run_is_recorded_in_order(spark: SparkSession, history: History) -> None:
    recorded = batch_runs(spark, history.lake)
    assert [r.run_id for r in recorded] == [
        history.run_1.run_id,
        history.run_2.run_id,
        history.rerun.run_id,
        history.full.run_id,
        history.retry_only.run_id,
    ]
    assert recorded[1] == history.run_2
    assert [r.raw_version for r in recorded] == [0, 1, 1, 1, 2]


def test_incremental_run_before_the_last_cutoff_is_a_config_error_writing_nothing(
    spark: SparkSession, history: History
) -> None:
    runs_before = len(batch_runs(spark, history.lake))
    with pytest.raises(ConfigError) as raised:
        rebuild(spark, history.config, CUTOFF_2)
    assert raised.value.key == "--cutoff"
    assert len(batch_runs(spark, history.lake)) == runs_before


# --- Range mode through the command line -------------------------------------------------------


def test_cli_range_rebuilds_only_the_given_dates(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout, tmp_path: Path
) -> None:
    append_raw(spark, lake, BEFORE_RUN_1[1:3])  # a1 (2026-03-01), b1 (2026-03-02)
    rebuild(spark, config, CUTOFF_1)
    files_before = partition_files(spark, lake)
    late = [
        record("a3", "dev-a", "03-01T09:00:30", "03-03T00:20:00", 20, temp=24.0),
        record("b3", "dev-b", "03-02T10:00:30", "03-03T00:20:00", 21, temp=12.0),
    ]
    append_raw(spark, lake, late)
    conf = write_conf(config, tmp_path)
    arguments = ["--cutoff", CUTOFF_2, "--from", "2026-03-01", "--to", "2026-03-01"]
    assert main(["batch", "rebuild", "--conf", conf, *arguments]) == EXIT_OK
    assert_view(
        view(spark, lake),
        expected_view(
            spark,
            [
                minute("dev-a", "03-01T09:00:00", 2, (20.0, 24.0)),
                minute("dev-b", "03-02T10:00:00", 1, (10.0,)),  # outside the range
            ],
        ),
    )
    assert partition_files(spark, lake)["2026-03-02"] == files_before["2026-03-02"]
    ranged = batch_runs(spark, lake)[-1]
    assert (ranged.mode, ranged.date_from, ranged.date_to) == (
        MODE_RANGE,
        date(2026, 3, 1),
        date(2026, 3, 1),
    )
    assert (ranged.dates_rebuilt, ranged.windows_written) == ([date(2026, 3, 1)], 1)
