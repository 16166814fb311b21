"""``_control/merge_runs``: what each merge into the unified table did.

One row per merge (``MERGE_RUN_SCHEMA``): the versions of BATCH, SPEED and the unified table
it read, the horizon it served, the partitions it rewrote. The next merge builds on the latest
successful one (its scope is what changed since those versions: docs/serving.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Optional

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from weir.control.runs import RUN_SUCCEEDED, RunRecord, append_run, latest_run, read_runs
from weir.lake import LakeLayout
from weir.schemas import MERGE_RUN_SCHEMA


@dataclass(frozen=True)
class MergeRun(RunRecord):
    """One row of ``_control/merge_runs``; field for field ``MERGE_RUN_SCHEMA`` (tested)."""

    SCHEMA: ClassVar[StructType] = MERGE_RUN_SCHEMA

    run_id: str
    status: str
    started_at: datetime
    scope: Optional[str] = None
    previous_run_id: Optional[str] = None
    horizon: Optional[datetime] = None
    batch_run_id: Optional[str] = None
    batch_version: Optional[int] = None
    speed_version: Optional[int] = None
    serving_version: Optional[int] = None
    partitions_replaced: Optional[list] = None
    rows_written: Optional[int] = None
    rows_deleted: Optional[int] = None
    files_added: Optional[int] = None
    files_removed: Optional[int] = None
    attempts: Optional[int] = None
    finished_at: Optional[datetime] = None
    error: Optional[str] = None
    blocked_batch_run_id: Optional[str] = None

    @property
    def committed(self) -> bool:
        """Whether this run changed the unified table (made a commit)."""
        return bool(self.partitions_replaced)


def record_merge_run(spark: SparkSession, lake: LakeLayout, run: MergeRun) -> None:
    """Append one run record (a blind append: never conflicts); creates the table."""
    append_run(spark, lake.merge_runs, run)


def merge_runs(spark: SparkSession, lake: LakeLayout) -> list[MergeRun]:
    """Every recorded merge, oldest first (timestamps as aware UTC datetimes)."""
    return read_runs(spark, lake.merge_runs, MergeRun)


def latest_merge_run(spark: SparkSession, lake: LakeLayout) -> Optional[MergeRun]:
    """The successful merge that finished last: the baseline of the next merge."""
    return latest_run(spark, lake.merge_runs, MergeRun, F.col("status") == RUN_SUCCEEDED)
