"""The `_control` run tables (weir.control): one row per run, read back the same in any process."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pyspark.sql import SparkSession

from weir.control import (
    MODE_FULL,
    MODE_RANGE,
    RUN_FAILED,
    RUN_SUCCEEDED,
    BatchRun,
    MergeRun,
    batch_runs,
    latest_batch_run,
    latest_merge_run,
    merge_runs,
    record_batch_run,
    record_merge_run,
)
from weir.control.runs import iso, new_run_id
from weir.lake import LakeLayout
from weir.schemas import BATCH_RUN_SCHEMA, MERGE_RUN_SCHEMA

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def batch_run(run_id: str, finished_minutes: int, **fields: object) -> BatchRun:
    return BatchRun(
        run_id=run_id,
        status=fields.pop("status", RUN_SUCCEEDED),  # type: ignore[arg-type]
        mode=fields.pop("mode", MODE_FULL),  # type: ignore[arg-type]
        cutoff=T0,
        horizon=T0 - timedelta(minutes=10),
        started_at=T0,
        finished_at=T0 + timedelta(minutes=finished_minutes),
        **fields,  # type: ignore[arg-type]
    )


def test_run_record_fields_are_the_batch_run_schema() -> None:
    assert tuple(f.name for f in dataclasses.fields(BatchRun)) == tuple(
        BATCH_RUN_SCHEMA.fieldNames()
    )


def test_merge_run_fields_are_the_merge_run_schema() -> None:
    # started_at is required, so the dataclass lists it before the optional fields.
    fields = [f.name for f in dataclasses.fields(MergeRun)]
    assert sorted(fields) == sorted(MERGE_RUN_SCHEMA.fieldNames())


def test_no_table_yet_means_no_runs(spark: SparkSession, lake: LakeLayout) -> None:
    assert batch_runs(spark, lake) == []
    assert latest_batch_run(spark, lake) is None
    assert merge_runs(spark, lake) == []
    assert latest_merge_run(spark, lake) is None


def test_a_recorded_run_reads_back_equal_with_utc_timestamps(
    spark: SparkSession, lake: LakeLayout
) -> None:
    run = batch_run("batch-1", 3, raw_version=4, records_in=10, dates_rebuilt=[T0.date()])
    record_batch_run(spark, lake, run)
    (read,) = batch_runs(spark, lake)
    assert read == run
    assert read.cutoff.tzinfo is not None and read.cutoff.utcoffset() == timedelta(0)


def test_latest_is_the_run_that_finished_last_with_the_status_and_mode_asked(
    spark: SparkSession, lake: LakeLayout
) -> None:
    for run in [
        batch_run("started-first-finished-last", 9),
        batch_run("finished-earlier", 5),
        batch_run("failed-latest", 12, status=RUN_FAILED),
        batch_run("range-latest", 11, mode=MODE_RANGE),
    ]:
        record_batch_run(spark, lake, run)
    assert latest_batch_run(spark, lake, (MODE_FULL,)).run_id == "started-first-finished-last"
    assert latest_batch_run(spark, lake).run_id == "range-latest"
    assert latest_batch_run(spark, lake, status=RUN_FAILED).run_id == "failed-latest"


def test_the_latest_merge_is_the_latest_successful_one(
    spark: SparkSession, lake: LakeLayout
) -> None:
    ok = MergeRun("merge-ok", RUN_SUCCEEDED, T0, finished_at=T0 + timedelta(minutes=1))
    failed = MergeRun("merge-failed", RUN_FAILED, T0, finished_at=T0 + timedelta(minutes=2))
    record_merge_run(spark, lake, ok)
    record_merge_run(spark, lake, failed)
    assert latest_merge_run(spark, lake) == ok
    assert [run.run_id for run in merge_runs(spark, lake)] == ["merge-failed", "merge-ok"]


def test_a_table_written_by_an_older_weir_reads_its_missing_columns_as_null(
    spark: SparkSession, lake: LakeLayout, tmp_path: Path
) -> None:
    older = [f for f in BATCH_RUN_SCHEMA.fields if f.name not in ("view_version", "index_version")]
    run = batch_run("old-run", 1)
    values = [getattr(run, f.name) for f in older]
    spark.createDataFrame([tuple(values)], BATCH_RUN_SCHEMA.__class__(older)).write.format(
        "delta"
    ).save(lake.batch_runs)
    (read,) = batch_runs(spark, lake)
    assert read == run and read.view_version is None and read.index_version is None


def test_run_ids_sort_by_start_and_differ_for_the_same_second() -> None:
    first, second = new_run_id("batch", T0), new_run_id("batch", T0)
    assert first.startswith("batch-20260301T100000Z-") and first != second
    assert new_run_id("merge", T0 + timedelta(seconds=1)) > new_run_id("merge", T0)


def test_instants_show_as_utc_with_z() -> None:
    assert iso(datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))) == (
        "2026-03-01T10:00:00Z"
    )
