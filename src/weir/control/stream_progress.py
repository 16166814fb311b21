"""``_control/stream_progress``: one row per streaming micro-batch, read back.

The streaming layer writes the rows (``weir.layers.streaming.progress``); this module reads
them for `weir stream status`, notebooks and freshness checks.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from weir.delta import read_table

# The columns `weir stream status` shows, per query: its last recorded micro-batch.
STATUS_COLUMNS = (
    "query_name",
    "batch_id",
    "trigger_time",
    "num_input_rows",
    "batch_duration_ms",
    "watermark",
    "offsets_behind_latest",
)


def latest_progress(progress: DataFrame) -> DataFrame:
    """The last progress row of each query (greatest trigger time, then batch id). Pure."""
    newest_first = Window.partitionBy("query_name").orderBy(
        F.col("trigger_time").desc(), F.col("batch_id").desc()
    )
    return (
        progress.withColumn("rank", F.row_number().over(newest_first))
        .where(F.col("rank") == 1)
        .select(*STATUS_COLUMNS)
    )


def stream_status(spark: SparkSession, path: str) -> list[dict[str, Any]]:
    """Last recorded micro-batch per query from the progress table at ``path``, by query
    name; [] when no stream has recorded progress there yet. Reads by path only."""
    progress = read_table(spark, path)
    if progress is None:
        return []
    rows = latest_progress(progress).orderBy("query_name")
    return [row.asDict() for row in rows.collect()]
