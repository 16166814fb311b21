"""``_control/batch_runs``: what each batch rebuild did, for the next run and for the merge.

One row per batch rebuild (``BATCH_RUN_SCHEMA``). The next incremental run finds its baseline
here (the raw version and cutoff its predecessor read), and the merge finds the horizon H up
to which the batch view is authoritative (docs/contract.md, "The serving rule").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import ClassVar, Optional

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from weir.control.runs import RUN_SUCCEEDED, RunRecord, append_run, latest_run, read_runs
from weir.lake import LakeLayout
from weir.schemas import BATCH_RUN_SCHEMA

MODE_INCREMENTAL = "incremental"
MODE_FULL = "full"
MODE_RANGE = "range"
# Runs after which every date of the batch view reflects the run's cutoff: the merge takes
# its horizon from these, and an incremental run takes its baseline from these.
COMPLETE_MODES = (MODE_FULL, MODE_INCREMENTAL)


@dataclass(frozen=True)
class BatchRun(RunRecord):
    """One row of ``_control/batch_runs``; field for field ``BATCH_RUN_SCHEMA`` (tested).

    Timestamps are timezone-aware UTC datetimes. Counts describe the raw snapshot the run
    read (every record with ``ingest_time < cutoff``), whatever the mode, so two runs with
    the same cutoff record the same counts.
    """

    SCHEMA: ClassVar[StructType] = BATCH_RUN_SCHEMA

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


def record_batch_run(spark: SparkSession, lake: LakeLayout, run: BatchRun) -> None:
    """Append one run record (one atomic Delta commit; creates the table on first use)."""
    append_run(spark, lake.batch_runs, run)


def batch_runs(spark: SparkSession, lake: LakeLayout) -> list[BatchRun]:
    """Every recorded run, oldest first (a small table: one row per run)."""
    return read_runs(spark, lake.batch_runs, BatchRun)


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
    condition = F.col("status") == status
    if modes is not None:
        condition = condition & F.col("mode").isin(list(modes))
    return latest_run(spark, lake.batch_runs, BatchRun, condition)
