"""Per-device, per-minute views (docs/contract.md): one function for the batch and speed layers."""

from __future__ import annotations

from datetime import datetime
from typing import Union

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from weir.contract.rules import WINDOW_DURATION
from weir.schemas import LAYER_BATCH, LAYER_SPEED, MINUTE_SCHEMA


def _latest_non_null(name: str) -> Column:
    """The field's value in the latest event that has it non-null.

    Latest = greatest event_time, ties by greatest event_id. max_by skips rows whose ordering
    is null, so nulling the ordering where the field is null skips events without the field.
    """
    latest = F.struct(F.col("event_time"), F.col("event_id"))
    return F.max_by(F.col(name), F.when(F.col(name).isNotNull(), latest))


def minute_aggregates() -> list:
    """The aggregate columns of telemetry_minute, in MINUTE_SCHEMA order (nulls ignored)."""
    return [
        F.count(F.lit(1)).alias("event_count"),
        F.avg("temperature_c").alias("temperature_c_avg"),
        F.min("temperature_c").alias("temperature_c_min"),
        F.max("temperature_c").alias("temperature_c_max"),
        F.avg("humidity_pct").alias("humidity_pct_avg"),
        F.min("battery_pct").alias("battery_pct_min"),
        F.avg("speed_kmh").alias("speed_kmh_avg"),
        F.max("speed_kmh").alias("speed_kmh_max"),
        _latest_non_null("lat").alias("lat_last"),
        _latest_non_null("lon").alias("lon_last"),
        _latest_non_null("status").alias("status_last"),
    ]


def aggregate_minutes(
    events: DataFrame, layer: str, computed_at: Union[datetime, Column]
) -> DataFrame:
    """telemetry_minute rows (MINUTE_SCHEMA) from deduplicated valid events.

    ``events`` must hold one row per event_id (see ``dedup_first_received``): event_count
    counts rows. Windows are 1-minute tumbling windows on event_time in UTC; event_date is
    the UTC date of window_start. ``computed_at`` is passed in so the function stays pure: a
    datetime for a batch run, or a Column (e.g. the micro-batch timestamp) in a stream. Works
    on a streaming DataFrame that carries an event-time watermark.
    """
    if layer not in (LAYER_BATCH, LAYER_SPEED):
        raise ValueError(f"layer must be {LAYER_BATCH!r} or {LAYER_SPEED!r}, not {layer!r}")
    window = F.window("event_time", WINDOW_DURATION)
    grouped = events.groupBy(F.col("device_id"), window.alias("window")).agg(*minute_aggregates())
    return grouped.select(
        F.col("device_id"),
        F.col("window.start").alias("window_start"),
        F.col("window.end").alias("window_end"),
        F.to_date(F.col("window.start")).alias("event_date"),
        *(F.col(f.name) for f in MINUTE_SCHEMA.fields[4:-2]),
        F.lit(layer).alias("layer"),
        (computed_at if isinstance(computed_at, Column) else F.lit(computed_at))
        .cast("timestamp")
        .alias("computed_at"),
    )
