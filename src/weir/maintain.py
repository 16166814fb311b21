"""`weir maintain`: compact and clean every Weir Delta table (docs/serving.md, "Maintenance").

For each table that exists: SPEED's superseded window versions deleted first
(:func:`weir.speed_table.compact_speed`: the speed layer appends a version of each window it
changes, every micro-batch), then OPTIMIZE (bin-packing small files into large ones; the three
per-minute views are Z-ordered by ``device_id``, the column readers filter on), then VACUUM
(deleting files no version younger than the retention still needs). Missing tables are
skipped. Both are safe beside running writers: OPTIMIZE commits with ``dataChange=false`` (the
merge's change detection ignores it, streams do not re-read it) and is retried when a writer
commits to the same files first; VACUUM only deletes files older than the retention.

The retention guard: never below :data:`MIN_RETENTION_HOURS` (7 days, Delta's own default)
unless the caller explicitly allows it; and Delta's ``retentionDurationCheck`` stays on, so
even then a table keeps what its ``delta.deletedFileRetentionDuration`` property demands.
Shorter retention breaks time travel, the merge's pinned versions and running streams.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional

from delta.tables import DeltaTable
from pyspark.errors import IllegalArgumentException
from pyspark.sql import SparkSession

from weir.config import ConfigError, WeirConfig
from weir.delta import retry_conflicts, table_version
from weir.errors import WeirError
from weir.lake import LakeLayout
from weir.speed_table import compact_speed

log = logging.getLogger(__name__)

MIN_RETENTION_HOURS = 168  # 7 days: Delta's default deletedFileRetentionDuration
OPTIMIZE_ATTEMPTS = 3  # a streaming writer may commit to the same files first: try again
ZORDER_COLUMNS = ("device_id",)

STATUS_MAINTAINED = "maintained"
STATUS_MISSING = "missing"


@dataclass(frozen=True)
class WeirTable:
    """A Delta table `weir maintain` looks after; ``zorder_by`` empty: compaction only;
    ``window_versions``: the table stores versions of each window (SPEED), the superseded
    ones are deleted first."""

    name: str
    path: str
    zorder_by: tuple[str, ...] = ()
    window_versions: bool = False


def weir_tables(lake: LakeLayout) -> list[WeirTable]:
    """Every Delta table Weir writes, in lake order."""
    return [
        WeirTable("raw/telemetry", lake.raw),
        WeirTable("quarantine/telemetry", lake.quarantine),
        WeirTable("speed/telemetry_minute", lake.speed, ZORDER_COLUMNS, window_versions=True),
        WeirTable("batch/telemetry_minute", lake.batch, ZORDER_COLUMNS),
        WeirTable("batch/events", lake.batch_events),
        WeirTable("serving/telemetry_minute", lake.serving, ZORDER_COLUMNS),
        WeirTable("_control/batch_runs", lake.batch_runs),
        WeirTable("_control/merge_runs", lake.merge_runs),
        WeirTable("_control/stream_progress", lake.stream_progress),
        WeirTable("dq/results", lake.dq_results),
    ]


def check_retention(retention_hours: float, allow_short_retention: bool) -> None:
    """Refuse a VACUUM retention below :data:`MIN_RETENTION_HOURS` unless explicitly allowed.

    Raises :class:`ConfigError` (exit 2, nothing touched).
    """
    if retention_hours < 0:
        raise ConfigError("--retention-hours", f"{retention_hours} is negative")
    if retention_hours < MIN_RETENTION_HOURS and not allow_short_retention:
        raise ConfigError(
            "--retention-hours",
            f"{retention_hours:g} h is below the {MIN_RETENTION_HOURS} h minimum: VACUUM would "
            "delete files that time travel, the merge's pinned versions and running streams "
            "may still read. Keep the default, or pass --allow-short-retention if no reader "
            "or writer can be older than that",
        )


@dataclass(frozen=True)
class TableMaintenance:
    """What maintenance did to one table."""

    table: WeirTable
    status: str
    files_before: Optional[int] = None
    files_after: Optional[int] = None
    files_compacted: Optional[int] = None
    versions_deleted: Optional[int] = None
    seconds: float = 0.0

    def line(self) -> str:
        """One line for the log and the console."""
        if self.status == STATUS_MISSING:
            return f"{self.table.name}: skipped (no Delta table at {self.table.path})"
        how = "z-ordered by " + ", ".join(self.table.zorder_by) if self.table.zorder_by else ""
        versions = (
            ""
            if self.versions_deleted is None
            else f"; {self.versions_deleted} superseded window versions deleted"
        )
        return (
            f"{self.table.name}: {self.files_before} -> {self.files_after} files "
            f"({self.files_compacted} compacted{', ' + how if how else ''}), vacuumed "
            f"in {self.seconds:.1f}s{versions}"
        )


def _file_count(table: DeltaTable) -> int:
    return int(table.detail().select("numFiles").first()[0])


def optimize(table: DeltaTable, zorder_by: tuple[str, ...]) -> int:
    """OPTIMIZE (Z-ordered when ``zorder_by``); the number of files it rewrote."""
    builder = table.optimize()
    result = builder.executeZOrderBy(*zorder_by) if zorder_by else builder.executeCompaction()
    metrics = result.select("metrics.numFilesRemoved").first()
    return int(metrics[0]) if metrics and metrics[0] is not None else 0


def vacuum(table: DeltaTable, weir_table: WeirTable, retention_hours: float) -> None:
    """VACUUM with Delta's own retention check on; its refusal becomes a clear error."""
    try:
        table.vacuum(retention_hours)
    except IllegalArgumentException as error:
        raise WeirError(
            f"VACUUM of {weir_table.name} refused by Delta: {retention_hours:g} h is shorter "
            "than the table's delta.deletedFileRetentionDuration. Weir keeps Delta's "
            "retentionDurationCheck on; lower that table property first if you really mean it"
        ) from error


def maintain_table(
    spark: SparkSession,
    weir_table: WeirTable,
    retention_hours: float,
    sleep: Callable[[float], None] = time.sleep,
) -> TableMaintenance:
    """(SPEED: delete superseded window versions, then) OPTIMIZE then VACUUM one table; a
    missing table is skipped."""
    started = time.monotonic()
    if table_version(spark, weir_table.path) is None:
        return TableMaintenance(weir_table, STATUS_MISSING)
    table = DeltaTable.forPath(spark, weir_table.path)
    files_before = _file_count(table)
    versions_deleted = None
    if weir_table.window_versions:
        # Before OPTIMIZE, so the files it writes no longer hold the deleted rows.
        versions_deleted, _ = retry_conflicts(
            lambda: compact_speed(spark, weir_table.path),
            attempts=OPTIMIZE_ATTEMPTS,
            what=f"deleting superseded window versions of {weir_table.name}",
            hint="a writer keeps committing to the same files; run `weir maintain` again later",
            sleep=sleep,
        )
    compacted, _ = retry_conflicts(
        lambda: optimize(table, weir_table.zorder_by),
        attempts=OPTIMIZE_ATTEMPTS,
        what=f"OPTIMIZE of {weir_table.name}",
        hint="a writer keeps committing to the same files; run `weir maintain` again later",
        sleep=sleep,
    )
    vacuum(table, weir_table, retention_hours)
    return TableMaintenance(
        weir_table,
        STATUS_MAINTAINED,
        files_before=files_before,
        files_after=_file_count(table),
        files_compacted=compacted,
        versions_deleted=versions_deleted,
        seconds=time.monotonic() - started,
    )


def run_maintenance(
    spark: SparkSession,
    config: WeirConfig,
    retention_hours: float = MIN_RETENTION_HOURS,
    allow_short_retention: bool = False,
    report: Callable[[str], None] = log.info,
) -> list[TableMaintenance]:
    """OPTIMIZE and VACUUM every Weir table that exists; ``report`` gets one line per table.

    The retention is checked before any table is touched. Idempotent: a second run finds
    nothing to compact and nothing to delete.
    """
    check_retention(retention_hours, allow_short_retention)
    done = []
    for weir_table in weir_tables(LakeLayout.from_config(config)):
        outcome = maintain_table(spark, weir_table, retention_hours)
        report(outcome.line())
        done.append(outcome)
    return done


__all__ = [
    "MIN_RETENTION_HOURS",
    "TableMaintenance",
    "WeirTable",
    "check_retention",
    "maintain_table",
    "run_maintenance",
    "weir_tables",
]
