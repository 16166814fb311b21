"""Benchmark of `weir merge`: its cost must follow the change, not the history.

For 1, 7 and 30 days of history (each in a lake of its own, same devices, same per-minute
rows), the unified table is first published in full (not timed). Then each timed step is what
a steady deployment does between two merges: a batch run moves the horizon H forward by 30
minutes (replacing the current day's BATCH partition) and the stream upserts the newest SPEED
windows. The merge after it is timed; best of ``repeat`` steps. Target: the 30-day merge takes
at most 10% longer than the 1-day one.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.bench.harness import Measurement, SuiteResult, environment
from weir.config import WeirConfig, config_from_mapping
from weir.control import MODE_INCREMENTAL, RUN_SUCCEEDED, BatchRun, record_batch_run
from weir.delta import table_version
from weir.lake import LakeLayout
from weir.schemas import (
    LAYER_BATCH,
    LAYER_SPEED,
    MINUTE_PARTITION_COLUMNS,
    MINUTE_SCHEMA,
)

SUITE = "merge"
HISTORY_DAYS = (1, 7, 30)
DEVICES = 50
STEP = timedelta(minutes=30)
LATENESS = timedelta(minutes=10)
SPEED_SPAN = timedelta(hours=2)  # SPEED keeps windows this far behind H (the watermark's wake)
NOW = datetime(2026, 3, 31, 12, 0, tzinfo=timezone.utc)
MAX_GROWTH = 1.10


def minute_rows(
    spark: SparkSession, start: datetime, end: datetime, layer: str, version: int
) -> DataFrame:
    """MINUTE_SCHEMA rows for every device and minute in [start, end); values vary by version."""
    minutes = int((end - start).total_seconds() // 60)
    first = int(start.timestamp())
    rows = spark.range(minutes * DEVICES).select(
        (F.col("id") % DEVICES).alias("device"),
        (F.lit(first) + (F.col("id") / DEVICES).cast("long") * 60).alias("at"),
    )
    value = (F.hash("device", "at", F.lit(version)) % 1000) / 10.0
    frame = rows.select(
        F.format_string("vehicle-%04d", "device").alias("device_id"),
        F.timestamp_seconds("at").alias("window_start"),
        F.timestamp_seconds(F.col("at") + 60).alias("window_end"),
        F.to_date(F.timestamp_seconds("at")).alias("event_date"),
        F.lit(30).cast("long").alias("event_count"),
        value.alias("temperature_c_avg"),
        (value - 1).alias("temperature_c_min"),
        (value + 1).alias("temperature_c_max"),
        F.lit(50.0).alias("humidity_pct_avg"),
        F.lit(80.0).alias("battery_pct_min"),
        (value / 2).alias("speed_kmh_avg"),
        value.alias("speed_kmh_max"),
        F.lit(37.5).alias("lat_last"),
        F.lit(127.0).alias("lon_last"),
        F.lit("driving").alias("status_last"),
        F.lit(layer).alias("layer"),
        # Later versions are computed later: SPEED's readers keep a window's newest.
        F.timestamp_seconds(F.lit(int(NOW.timestamp()) + version)).alias("computed_at"),
    )
    return frame.select(*[F.col(f.name).cast(f.dataType) for f in MINUTE_SCHEMA.fields])


def _batch_run(horizon: datetime, version: int) -> BatchRun:
    return BatchRun(
        run_id=f"bench-{uuid.uuid4().hex[:8]}",
        status=RUN_SUCCEEDED,
        mode=MODE_INCREMENTAL,
        cutoff=horizon + LATENESS,
        horizon=horizon,
        started_at=datetime.now(timezone.utc),
        finished_at=datetime.now(timezone.utc),
        view_version=version,
    )


def publish_history(spark: SparkSession, lake: LakeLayout, days: int) -> datetime:
    """BATCH with ``days`` of history up to H, SPEED beyond it, one batch run; returns H."""
    horizon = NOW - LATENESS
    minute_rows(spark, NOW - timedelta(days=days), horizon, LAYER_BATCH, 0).write.format(
        "delta"
    ).partitionBy(*MINUTE_PARTITION_COLUMNS).mode("overwrite").save(lake.batch)
    minute_rows(spark, horizon - SPEED_SPAN, NOW + STEP, LAYER_SPEED, 0).write.format(
        "delta"
    ).partitionBy(*MINUTE_PARTITION_COLUMNS).mode("overwrite").save(lake.speed)
    record_batch_run(spark, lake, _batch_run(horizon, table_version(spark, lake.batch)))
    return horizon


def advance(spark: SparkSession, lake: LakeLayout, horizon: datetime, step: int) -> datetime:
    """One batch run moving H by STEP (its day's partition replaced) and new SPEED versions
    of the newest windows, appended as the speed layer does."""
    from weir.layers.streaming.speed import append_versions

    moved = horizon + STEP
    day = moved - timedelta(minutes=1)
    day_start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    minute_rows(spark, day_start, moved, LAYER_BATCH, step).write.format("delta").mode(
        "overwrite"
    ).option("replaceWhere", f"event_date = '{day_start.date().isoformat()}'").save(lake.batch)
    record_batch_run(spark, lake, _batch_run(moved, table_version(spark, lake.batch)))
    newest = NOW + STEP * step
    append_versions(
        minute_rows(spark, newest - timedelta(minutes=5), newest + STEP, LAYER_SPEED, step),
        lake.speed,
        "bench-speed",
        step,
    )
    return moved


def _lake_config(config: WeirConfig, root: Path) -> WeirConfig:
    document = config.model_dump()
    document["lake"] = {"root": f"file://{root}", "landing": None}
    return config_from_mapping(document, environ={})


def time_merges(spark: SparkSession, config: WeirConfig, days: int, repeat: int) -> Measurement:
    """Best of ``repeat`` steady-state merges over ``days`` of history."""
    from weir.serving import run_merge

    lake = LakeLayout.from_config(config)
    horizon = publish_history(spark, lake, days)
    run_merge(spark, config)  # the first, full publication: not what this measures
    best: Optional[float] = None
    rows = 0
    for step in range(1, repeat + 1):
        horizon = advance(spark, lake, horizon, step)
        started = time.perf_counter()
        merged = run_merge(spark, config)
        seconds = time.perf_counter() - started
        rows = (merged.rows_written or 0) + (merged.rows_deleted or 0)
        best = seconds if best is None else min(best, seconds)
    return Measurement(name=f"merge-{days}d", events=rows, seconds=best or 0.0)


def run(
    spark: SparkSession, *, events: int = 0, repeat: int = 3, config: WeirConfig
) -> SuiteResult:
    """``events`` is not used: the history is sized in days (HISTORY_DAYS x DEVICES x 1440)."""
    result = SuiteResult(suite=SUITE)
    with tempfile.TemporaryDirectory(prefix="weir-bench-merge-") as folder:
        for days in HISTORY_DAYS:
            lake_config = _lake_config(config, Path(folder) / f"lake-{days}d")
            result.measurements.append(time_merges(spark, lake_config, days, max(repeat, 2)))
    one, thirty = result.measurement("merge-1d"), result.measurement("merge-30d")
    growth = thirty.seconds / one.seconds if one.seconds else float("inf")
    result.checks.append(
        {
            "check": f"merge-30d seconds <= {MAX_GROWTH} x merge-1d seconds",
            "value": round(growth, 3),
            "met": growth <= MAX_GROWTH,
        }
    )
    result.environment = environment(
        devices=DEVICES,
        history_rows={days: DEVICES * 1440 * days for days in HISTORY_DAYS},
        master=spark.sparkContext.master,
        load_average=[round(x, 2) for x in os.getloadavg()],
    )
    return result
