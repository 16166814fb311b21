"""The data-quality metrics as pure transforms: Spark built-ins, no path, clock or session.

Each Weir table is scanned once for all of its metrics (docs/quality.md, "How Great
Expectations is used"):

    raw.transform(zone_metrics(RAW_SCHEMA, cutoff))              -> one row
    quarantine.transform(zone_metrics(QUARANTINE_SCHEMA, cutoff,
                                      reasons=all_reasons()))    -> one row
    view.transform(hourly_view_metrics)                          -> one row per hour of windows
    agreement_by_day(batch, speed, tolerance, horizon)           -> one row per event date

The per-hour rows of a view add up to the view's totals (:func:`view_totals`), and they are
also the hourly volume the unified table's volume check reads: one scan serves both. The
small pure-Python steps after ``collect`` (totals, freshness, the volume band) live here too.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StructType

from weir.contract.rules import METRIC_BOUNDS
from weir.schemas import MINUTE_KEY, MINUTE_SCHEMA

# Metric names: the columns of the metrics frames Great Expectations validates.
ROWS = "rows"
ROWS_BEFORE_CUTOFF = "rows_before_cutoff"
UNKNOWN_REASONS = "unknown_reasons"
DUPLICATE_KEYS = "duplicate_keys"
NEWEST_WINDOW_END = "newest_window_end"
HOUR = "hour"
EVENTS = "events"
NULL_PREFIX = "null_"
IN_RANGE_PREFIX = "in_range_"
_OUT_OF_RANGE_PREFIX = "_out_of_range_"
_NON_NULL_PREFIX = "_non_null_"
_DISTINCT_KEYS = "_distinct_keys"
_MICROS = 1_000_000
UTC = timezone.utc

# The averages of DESIGN §5 that batch-vs-speed agreement compares (with event_count).
AGREEMENT_AVERAGES: tuple[str, ...] = tuple(
    f.name for f in MINUTE_SCHEMA.fields if f.name.endswith("_avg")
)


def key_columns(schema: StructType) -> tuple[str, ...]:
    """The columns a table must never leave null: its schema's non-nullable fields."""
    return tuple(f.name for f in schema.fields if not f.nullable)


def bounded_columns(schema: StructType = MINUTE_SCHEMA) -> dict[str, tuple[float, float]]:
    """View columns with DESIGN §3 bounds: an aggregate of a bounded field (``speed_kmh_max``,
    ``lat_last``) lies within that field's bounds (the bounds live in weir.contract.rules)."""
    bounded = {}
    for field in schema.fields:
        if not isinstance(field.dataType, DoubleType):
            continue
        for name, bounds in METRIC_BOUNDS.items():
            if field.name.startswith(f"{name}_"):
                bounded[field.name] = bounds
    return bounded


def null_column(name: str) -> str:
    return f"{NULL_PREFIX}{name}"


def in_range_column(name: str) -> str:
    return f"{IN_RANGE_PREFIX}{name}"


def _null_counts(columns: Iterable[str]) -> list[Column]:
    return [F.count(F.when(F.col(c).isNull(), 1)).alias(null_column(c)) for c in columns]


def zone_metrics(
    schema: StructType, cutoff: Optional[datetime], reasons: Optional[Sequence[str]] = None
) -> Callable[[DataFrame], DataFrame]:
    """One row for a RAW or QUARANTINE snapshot: ``rows``; ``null_<key>`` per key column;
    ``rows_before_cutoff`` (``ingest_time < cutoff``; null without a cutoff); with ``reasons``,
    ``unknown_reasons``: rows whose reason is not among them (a null reason counts)."""

    def metrics(zone: DataFrame) -> DataFrame:
        columns = [F.count(F.lit(1)).alias(ROWS), *_null_counts(key_columns(schema))]
        if cutoff is None:
            columns.append(F.lit(None).cast("long").alias(ROWS_BEFORE_CUTOFF))
        else:
            before = F.col("ingest_time") < F.lit(cutoff)
            columns.append(F.count(F.when(before, 1)).alias(ROWS_BEFORE_CUTOFF))
        if reasons is not None:
            known = F.col("reason").isin(list(reasons))
            columns.append(
                F.count(F.when(~F.coalesce(known, F.lit(False)), 1)).alias(UNKNOWN_REASONS)
            )
        return zone.agg(*columns)

    return metrics


def hourly_view_metrics(view: DataFrame) -> DataFrame:
    """Per hour of ``window_start`` (UTC, epoch seconds in ``hour``): rows, ``events`` (sum of
    event_count), null counts of the key columns, out-of-range and non-null counts of every
    bounded column, distinct (device_id, window_start) keys, and the newest window_end (epoch
    microseconds). A key's window_start lies in exactly one hour, so distinct keys add up
    across hours: the view's duplicates are rows minus the sum (:func:`view_totals`).
    """
    columns: list[Column] = [
        F.count(F.lit(1)).alias(ROWS),
        F.coalesce(F.sum("event_count"), F.lit(0)).cast("long").alias(EVENTS),
        *_null_counts(key_columns(MINUTE_SCHEMA)),
        # A struct is never null: a key with a null part is still one key.
        F.count_distinct(F.struct(*MINUTE_KEY)).alias(_DISTINCT_KEYS),
        F.max(F.unix_micros("window_end")).alias(NEWEST_WINDOW_END),
    ]
    for name, (low, high) in bounded_columns().items():
        value = F.col(name)
        columns.append(
            F.count(F.when((value < low) | (value > high), 1)).alias(_OUT_OF_RANGE_PREFIX + name)
        )
        columns.append(F.count(value).alias(_NON_NULL_PREFIX + name))
    hour = F.unix_seconds(F.date_trunc("hour", "window_start")).alias(HOUR)
    return view.groupBy(hour).agg(*columns)


def view_totals(hours: Sequence[Mapping]) -> dict:
    """The one-row metrics of a view from its :func:`hourly_view_metrics` rows: ``rows``,
    ``null_<key>``, ``in_range_<column>`` (share of non-null values within bounds; 1.0 with
    none), ``duplicate_keys`` and ``newest_window_end`` (aware UTC datetime, None if empty)."""

    def total(name: str) -> int:
        return sum(int(hour[name] or 0) for hour in hours)

    metrics: dict = {ROWS: total(ROWS)}
    for column in key_columns(MINUTE_SCHEMA):
        metrics[null_column(column)] = total(null_column(column))
    for column in bounded_columns():
        non_null = total(_NON_NULL_PREFIX + column)
        outside = total(_OUT_OF_RANGE_PREFIX + column)
        metrics[in_range_column(column)] = 1.0 if non_null == 0 else 1 - outside / non_null
    metrics[DUPLICATE_KEYS] = metrics[ROWS] - total(_DISTINCT_KEYS)
    newest = [hour[NEWEST_WINDOW_END] for hour in hours if hour[NEWEST_WINDOW_END] is not None]
    metrics[NEWEST_WINDOW_END] = utc_from_micros(max(newest)) if newest else None
    return metrics


def utc_from_micros(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def freshness_minutes(newest: Optional[datetime], now: datetime) -> Optional[float]:
    """Minutes from the newest window_end to ``now`` (None when the table has no window)."""
    if newest is None:
        return None
    return (now - newest).total_seconds() / 60


# --- Volume: events per hour against the trailing median ----------------------------------------


@dataclass(frozen=True)
class HourVolume:
    hour: datetime
    events: int
    trailing_median: Optional[float]  # None: no earlier hour to compare with

    @property
    def ratio(self) -> Optional[float]:
        """events / trailing median (None when there is no median or it is 0)."""
        if not self.trailing_median:
            return None
        return self.events / self.trailing_median


def hourly_volume(
    events_by_hour: Mapping[datetime, int], newest: Optional[datetime], trailing_hours: int
) -> list[HourVolume]:
    """The last ``trailing_hours`` complete hours before the hour of ``newest`` (the newest
    window_end: the hour it falls in is still filling), each with the median of the
    ``trailing_hours`` hours before it. Hours without windows count as 0 events between the
    first hour with data and ``newest``: a stream that stopped is a volume problem, not a gap
    in the check.
    """
    if newest is None or not events_by_hour:
        return []
    first = min(events_by_hour)
    # A window ending exactly on the hour completes the hour before it.
    current = newest.replace(minute=0, second=0, microsecond=0)
    hours = []
    at = first
    while at < current:
        hours.append(at)
        at += timedelta(hours=1)
    counts = [int(events_by_hour.get(hour, 0)) for hour in hours]
    volumes = []
    for index in range(max(0, len(hours) - trailing_hours), len(hours)):
        before = counts[max(0, index - trailing_hours) : index]
        median = float(statistics.median(before)) if before else None
        volumes.append(HourVolume(hours[index], counts[index], median))
    return volumes


# --- Batch-vs-speed agreement ---------------------------------------------------------------------

WINDOWS_COMPARED = "windows_compared"
WINDOWS_AGREEING = "windows_agreeing"
AGREEMENT = "agreement"


def values_close(left: Column, right: Column, tolerance: float) -> Column:
    """Both null, or within ``tolerance`` relative to the larger magnitude (absolute below 1)."""
    scale = F.greatest(F.abs(left), F.abs(right), F.lit(1.0))
    within = F.abs(left - right) <= F.lit(tolerance) * scale
    return (left.isNull() & right.isNull()) | F.coalesce(within, F.lit(False))


def agreement_by_day(
    batch: DataFrame, speed: DataFrame, tolerance: float, horizon: Optional[datetime] = None
) -> DataFrame:
    """Per event date, the windows both layers computed (``windows_compared``; batch windows
    with ``window_end <= horizon`` only, when given: the ones batch is authoritative for) and
    those that agree (``windows_agreeing``): the same event_count and every average within
    ``tolerance`` (:func:`values_close`). ``agreement`` = agreeing / compared. ``event_date``
    as text.
    """
    if horizon is not None:
        batch = batch.where(F.col("window_end") <= F.lit(horizon))
    columns = ("event_count", *AGREEMENT_AVERAGES)
    left = batch.select(*MINUTE_KEY, "event_date", *(F.col(c).alias(f"b_{c}") for c in columns))
    right = speed.select(*MINUTE_KEY, *(F.col(c).alias(f"s_{c}") for c in columns))
    agree = F.col("b_event_count") == F.col("s_event_count")
    for column in AGREEMENT_AVERAGES:
        agree = agree & values_close(F.col(f"b_{column}"), F.col(f"s_{column}"), tolerance)
    per_day = (
        left.join(right, list(MINUTE_KEY))
        .groupBy("event_date")
        .agg(
            F.count(F.lit(1)).alias(WINDOWS_COMPARED),
            F.count(F.when(agree, 1)).alias(WINDOWS_AGREEING),
        )
    )
    return per_day.select(
        F.date_format("event_date", "yyyy-MM-dd").alias("event_date"),
        WINDOWS_COMPARED,
        WINDOWS_AGREEING,
        (F.col(WINDOWS_AGREEING) / F.col(WINDOWS_COMPARED)).alias(AGREEMENT),
    ).orderBy("event_date")


def overall_agreement(days: Sequence[Mapping]) -> Optional[float]:
    """Agreeing / compared windows over every day (None when no window was compared)."""
    compared = sum(int(day[WINDOWS_COMPARED]) for day in days)
    if compared == 0:
        return None
    return sum(int(day[WINDOWS_AGREEING]) for day in days) / compared
