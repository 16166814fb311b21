"""SPEED as stored: versions of each window, appended; read as one row per window.

The speed layer appends, per micro-batch, the full aggregate of every window the batch changed
(docs/streaming.md, "SPEED: update mode and appended window versions"). A window's
``computed_at`` is the micro-batch's timestamp, which Spark records in the offset log before
the batch runs and reuses when it is replayed, so it orders a window's versions: the newest is
the speed view's row. Stored, SPEED therefore holds several rows per ``(device_id,
window_start)``; every reader goes through :func:`read_speed` (or :func:`newest_versions` on a
frame it pinned) and sees the ``telemetry_minute`` schema with one row per window, as DESIGN §5
and §6 define it. :func:`compact_speed` (run by `weir maintain`) deletes the superseded
versions, bounding the table's growth; readers do not depend on it having run.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.delta import read_snapshot, table_version
from weir.schemas import MINUTE_KEY, MINUTE_PARTITION_COLUMNS, MINUTE_SCHEMA, SPEED_VERSION_COLUMN

# A window's key and the columns that follow from it. Grouping by all of them is the same
# grouping as by the key, and lets Spark push a reader's filters on the partition column and
# on window_end below the collapse (partition pruning, file skipping).
_WINDOW_COLUMNS = (*MINUTE_PARTITION_COLUMNS, *MINUTE_KEY, "window_end")
HISTORY_SEARCHED = 100  # commits searched for the compaction's own, to report what it deleted


def newest_versions(rows: DataFrame) -> DataFrame:
    """One row per ``(device_id, window_start)``: the version with the greatest
    ``computed_at``. Pure; columns in ``MINUTE_SCHEMA`` order.

    Two versions with the same ``computed_at`` come from one micro-batch written twice (a
    replay after a crash between the write and the checkpoint); they may differ only in which
    of an event's copies within that batch won. The greatest row of them is kept, so every
    reader of every version of the table picks the same one.
    """
    others = [
        name
        for name in MINUTE_SCHEMA.fieldNames()
        if name not in _WINDOW_COLUMNS and name != SPEED_VERSION_COLUMN
    ]
    newest = F.max(F.struct(SPEED_VERSION_COLUMN, *others)).alias("newest")
    return (
        rows.groupBy(*_WINDOW_COLUMNS)
        .agg(newest)
        .select(*_WINDOW_COLUMNS, "newest.*")
        .select(*MINUTE_SCHEMA.fieldNames())
    )


def read_speed(spark: SparkSession, path: str, version: Optional[int] = None) -> DataFrame:
    """The speed view at ``path`` (its latest version, or ``version``): one row per window,
    ``MINUTE_SCHEMA``. An empty frame when there is no table yet."""
    if version is None:
        version = table_version(spark, path)
    if version is None:
        return spark.createDataFrame([], MINUTE_SCHEMA)
    rows = read_snapshot(spark, path, version).select(*MINUTE_SCHEMA.fieldNames())
    return newest_versions(rows)


def superseded_windows(rows: DataFrame, since: Optional[datetime] = None) -> DataFrame:
    """The windows with more than one version: key, ``event_date`` and the newest
    ``computed_at`` (``newest``). Pure. Every other version of them is superseded.

    ``since``: only the windows with a version computed at or after it (the versions appended
    since a previous compaction), each with its newest version; whether it has older ones is
    then left to the deletion (which deletes nothing for a window with one version).
    """
    if since is not None:
        recent = rows.where(F.col(SPEED_VERSION_COLUMN) >= F.lit(since))
        return recent.groupBy(*MINUTE_PARTITION_COLUMNS, *MINUTE_KEY).agg(
            F.max(SPEED_VERSION_COLUMN).alias("newest")
        )
    return (
        rows.groupBy(*MINUTE_PARTITION_COLUMNS, *MINUTE_KEY)
        .agg(
            F.max(SPEED_VERSION_COLUMN).alias("newest"),
            F.count(F.lit(1)).alias("versions"),
        )
        .where(F.col("versions") > 1)
        .drop("versions")
    )


def compact_speed(spark: SparkSession, path: str, since: Optional[datetime] = None) -> int:
    """Delete every version of a window older than its newest; the number of rows deleted.

    One MERGE (with deletion vectors on SPEED, no file is rewritten) whose source is the
    windows with several versions at the table's current version (``since``: the windows with
    a version computed since then, :func:`superseded_windows`). Correct whatever was appended
    since (appends only add newer versions, so a row older than one that exists stays
    superseded), but not free of conflicts: the table is Serializable, so an append committed
    meanwhile to a date it reads fails it with ConcurrentAppendException. The stream runs it
    between its own appends (``SpeedCompactor``); `weir maintain` retries it. Two versions
    with the same ``computed_at`` (a replayed micro-batch) both stay; readers pick one.
    """
    from delta.tables import DeltaTable

    version = table_version(spark, path)
    if version is None:
        return 0
    windows = superseded_windows(read_snapshot(spark, path, version), since).persist()
    try:
        bounds = windows.agg(
            F.collect_set(MINUTE_PARTITION_COLUMNS[0]).alias("dates"),
            F.min("window_start").alias("earliest"),
        ).first()
        if not bounds["dates"]:
            return 0
        # Literal bounds Delta prunes the target's files by: the dates, and the earliest
        # window (the stream's appended files each hold a few minutes of windows). Spark
        # hands the window back naive, in this process's zone: made aware, it is an instant.
        earliest = bounds["earliest"].astimezone(timezone.utc)
        condition = F.col(f"t.{MINUTE_PARTITION_COLUMNS[0]}").isin(sorted(bounds["dates"]))
        condition &= F.col("t.window_start") >= F.lit(earliest)
        for column in (*MINUTE_PARTITION_COLUMNS, *MINUTE_KEY):
            condition &= F.col(f"t.{column}") == F.col(f"s.{column}")
        table = DeltaTable.forPath(spark, path)
        (
            table.alias("t")
            .merge(windows.alias("s"), condition)
            .whenMatchedDelete(condition=f"t.{SPEED_VERSION_COLUMN} < s.newest")
            .execute()
        )
        # The speed layer's appends may follow it at once: its commit is the newest MERGE.
        merges = table.history(HISTORY_SEARCHED).where(
            (F.col("operation") == "MERGE") & (F.col("version") > version)
        )
        newest = merges.orderBy(F.col("version").desc()).first()
        return int(newest["operationMetrics"].get("numTargetRowsDeleted", 0)) if newest else 0
    finally:
        windows.unpersist()


__all__ = ["compact_speed", "newest_versions", "read_speed", "superseded_windows"]
