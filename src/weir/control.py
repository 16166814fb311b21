"""The ``_control`` tables: what each batch run did, for the next run and for the merge.

``_control/batch_runs`` holds one row per batch rebuild (``BATCH_RUN_SCHEMA``), appended
once when the run ends, succeeded or failed. The next incremental run finds its baseline here
(the raw version and cutoff its predecessor read), and the merge finds the horizon H up to
which the batch view is authoritative (DESIGN.md §6).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Optional

from delta.tables import DeltaTable
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType, TimestampType

from weir.lake import LakeLayout
from weir.schemas import BATCH_RUN_SCHEMA

RUN_SUCCEEDED = "succeeded"
RUN_FAILED = "failed"

MODE_INCREMENTAL = "incremental"
MODE_FULL = "full"
MODE_RANGE = "range"
# Runs after which every date of the batch view reflects the run's cutoff: the merge takes
# its horizon from these, and an incremental run takes its baseline from these.
COMPLETE_MODES = (MODE_FULL, MODE_INCREMENTAL)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class BatchRun:
    """One row of ``_control/batch_runs``; field for field ``BATCH_RUN_SCHEMA`` (tested).

    Timestamps are timezone-aware UTC datetimes. Counts describe the raw snapshot the run
    read (every record with ``ingest_time < cutoff``), whatever the mode, so two runs with
    the same cutoff record the same counts.
    """

    run_id: str
    status: str
    mode: str
    cutoff: datetime
    horizon: datetime
    raw_version: Optional[int] = None
    date_from: Optional[date] = None
    date_to: Optional[date] = None
    records_in: Optional[int] = None
    valid: Optional[int] = None
    quarantined: Optional[int] = None
    duplicates: Optional[int] = None
    conflicting_duplicates: Optional[int] = None
    windows_written: Optional[int] = None
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    error: Optional[str] = None
    baseline_run_id: Optional[str] = None
    changes_since: Optional[datetime] = None
    dates_rebuilt: Optional[list[date]] = None
    view_version: Optional[int] = None
    index_version: Optional[int] = None

    def as_row(self) -> tuple:
        """The values in ``BATCH_RUN_SCHEMA`` order, for ``spark.createDataFrame``."""
        return tuple(getattr(self, name) for name in BATCH_RUN_SCHEMA.fieldNames())


def record_batch_run(spark: SparkSession, lake: LakeLayout, run: BatchRun) -> None:
    """Append one run record: one atomic Delta commit; creates the table on first use.

    ``mergeSchema`` lets a table written by an older Weir gain the columns added since.
    """
    spark.createDataFrame([run.as_row()], BATCH_RUN_SCHEMA).write.format("delta").mode(
        "append"
    ).option("mergeSchema", "true").save(lake.batch_runs)


def _utc_from_micros(micros: Optional[int]) -> Optional[datetime]:
    return None if micros is None else _EPOCH + timedelta(microseconds=micros)


def portable_columns(schema: StructType, present: Iterable[str]) -> list[Column]:
    """``schema``'s columns of a run table, readable the same way in any Python process.

    Timestamps travel as epoch microseconds: PySpark turns TimestampType into naive datetimes
    in the Python process's local zone, which need not be UTC. A column a table written by an
    older Weir lacks reads as null. Pair with :func:`utc_values`.
    """
    present = set(present)
    columns = []
    for field in schema.fields:
        if field.name not in present:
            columns.append(F.lit(None).alias(field.name))
        elif isinstance(field.dataType, TimestampType):
            columns.append(F.unix_micros(F.col(field.name)).alias(field.name))
        else:
            columns.append(F.col(field.name))
    return columns


def utc_values(schema: StructType, values: dict) -> dict:
    """A row read through :func:`portable_columns`, its timestamps as aware UTC datetimes."""
    for field in schema.fields:
        if isinstance(field.dataType, TimestampType):
            values[field.name] = _utc_from_micros(values[field.name])
    return values


def _from_row(values: dict) -> BatchRun:
    return BatchRun(**utc_values(BATCH_RUN_SCHEMA, values))


def batch_runs(spark: SparkSession, lake: LakeLayout) -> list[BatchRun]:
    """Every recorded run, oldest first (a small table: one row per run)."""
    if not DeltaTable.isDeltaTable(spark, lake.batch_runs):
        return []
    runs = spark.read.format("delta").load(lake.batch_runs)
    ordered = runs.orderBy("started_at", "run_id").select(
        *portable_columns(BATCH_RUN_SCHEMA, runs.columns)
    )
    return [_from_row(row.asDict()) for row in ordered.collect()]


def latest_batch_run(
    spark: SparkSession,
    lake: LakeLayout,
    modes: Optional[Iterable[str]] = None,
    status: str = RUN_SUCCEEDED,
) -> Optional[BatchRun]:
    """The most recently finished run with ``status`` (and one of ``modes``), or None.

    For the merge: ``latest_batch_run(spark, lake, COMPLETE_MODES).horizon`` is the horizon
    up to which the batch view is authoritative.
    """
    if not DeltaTable.isDeltaTable(spark, lake.batch_runs):
        return None
    runs = spark.read.format("delta").load(lake.batch_runs).where(F.col("status") == status)
    if modes is not None:
        runs = runs.where(F.col("mode").isin(list(modes)))
    latest = runs.orderBy(F.col("finished_at").desc(), F.col("started_at").desc())
    row = latest.select(*portable_columns(BATCH_RUN_SCHEMA, runs.columns)).first()
    return None if row is None else _from_row(row.asDict())
