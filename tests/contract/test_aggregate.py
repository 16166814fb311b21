"""aggregate_minutes: per device and 1-minute window, nulls ignored, *_last by latest event.

Every scenario has its own device, so one aggregation of all of them (the module-scoped
``minutes`` fixture) serves every test; each test compares its own device's windows.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Optional

import pytest
from pyspark.sql import SparkSession
from pyspark.sql.types import StructType

from contract.builders import (
    UTC,
    Collected,
    assert_rows_equal,
    at,
    collect,
    event_frame,
    typed_event,
)
from weir.contract import aggregate_minutes
from weir.contract.rules import METRIC_FIELDS
from weir.schemas import LAYER_BATCH, LAYER_SPEED, MINUTE_SCHEMA

COMPUTED_AT = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
NO_METRICS = dict.fromkeys(METRIC_FIELDS)


def event(device_id: str, event_id: str, event_time: datetime, **fields: Any) -> dict[str, Any]:
    """An event with every metric and the status null unless given."""
    return typed_event(
        device_id=device_id,
        event_id=event_id,
        event_time=event_time,
        **{**NO_METRICS, "status": None, **fields},
    )


BASIC = [
    event("basic", "b1", at(12, 0, 5), temperature_c=10.0, humidity_pct=40.0, battery_pct=90.0,
          speed_kmh=10.0, lat=1.0, lon=2.0, status="driving"),
    event("basic", "b2", at(12, 0, 30), temperature_c=20.0, humidity_pct=50.0, battery_pct=80.0,
          speed_kmh=30.0, lat=1.5, lon=2.5, status="parked"),
    event("basic", "b3", at(12, 0, 15), temperature_c=36.0, humidity_pct=60.0, battery_pct=85.0,
          speed_kmh=20.0, lat=1.2, lon=2.2, status="charging"),
]  # fmt: skip
NULLS = [
    event("nulls", "n1", at(12, 0, 1), temperature_c=10.0, speed_kmh=None, battery_pct=50.0),
    event("nulls", "n2", at(12, 0, 2), temperature_c=None, speed_kmh=None, battery_pct=None),
    event("nulls", "n3", at(12, 0, 3), temperature_c=30.0, speed_kmh=None, battery_pct=None),
]
ALL_NULL = [event("all-null", "a1", at(12, 0, 1)), event("all-null", "a2", at(12, 0, 2))]
# Same event_time: the greatest event_id in string order wins ("t9" > "t10").
LAST_TIE = [
    event("last-tie", "t10", at(12, 0, 30), lat=10.0, lon=10.0, status="ten"),
    event("last-tie", "t9", at(12, 0, 30), lat=9.0, lon=9.0, status="nine"),
    event("last-tie", "t8", at(12, 0, 10), lat=8.0, lon=8.0, status="eight"),
]
# The latest event lacks lat and status: each *_last comes from the latest event that has it.
LAST_SKIPS_NULLS = [
    event("last-skips", "s1", at(12, 0, 10), lat=1.0, lon=1.0, status="first"),
    event("last-skips", "s2", at(12, 0, 20), lat=2.0, lon=None, status=None),
    event("last-skips", "s3", at(12, 0, 50), lat=None, lon=3.0, status=None),
]
EDGES = [
    event("edges", "w1", at(12, 0, 0), temperature_c=1.0),
    event("edges", "w2", at(12, 0, 59.999999), temperature_c=2.0),
    event("edges", "w3", at(12, 1, 0), temperature_c=3.0),
]
MIDNIGHT = [
    event("midnight", "m1", at(23, 59, 59.999999), temperature_c=1.0),
    event("midnight", "m2", at(0, 0, 0, day=2), temperature_c=2.0),
]
ALL_EVENTS = [*BASIC, *NULLS, *ALL_NULL, *LAST_TIE, *LAST_SKIPS_NULLS, *EDGES, *MIDNIGHT]


@pytest.fixture(scope="module")
def minutes(spark: SparkSession) -> Collected:
    return collect(aggregate_minutes(event_frame(spark, ALL_EVENTS), LAYER_BATCH, COMPUTED_AT))


def window(
    device_id: str,
    start: datetime,
    count: int,
    temperature: tuple = (None, None, None),
    humidity_avg: Optional[float] = None,
    battery_min: Optional[float] = None,
    speed: tuple = (None, None),
    last: tuple = (None, None, None),
) -> tuple:
    """A MINUTE_SCHEMA row: temperature (avg, min, max), speed (avg, max), *_last."""
    end = start + timedelta(minutes=1)
    aggregates = (*temperature, humidity_avg, battery_min, *speed, *last)
    return (device_id, start, end, start.date(), count, *aggregates, LAYER_BATCH, COMPUTED_AT)


def assert_windows(minutes: Collected, device_id: str, expected: list[tuple]) -> None:
    assert_rows_equal(
        minutes, MINUTE_SCHEMA, expected, where=lambda r: r.device_id == device_id, precision=1e-9
    )


def test_output_has_the_minute_schema(minutes):
    assert [(f.name, f.dataType) for f in minutes.schema] == [
        (f.name, f.dataType) for f in MINUTE_SCHEMA
    ]


def test_one_window_counts_events_and_averages_minimums_maximums(minutes):
    expected = window(
        "basic",
        at(12, 0),
        3,
        temperature=(22.0, 10.0, 36.0),
        humidity_avg=50.0,
        battery_min=80.0,
        speed=(20.0, 30.0),
        last=(1.5, 2.5, "parked"),
    )
    assert_windows(minutes, "basic", [expected])


def test_aggregates_ignore_null_values(minutes):
    expected = window("nulls", at(12, 0), 3, temperature=(20.0, 10.0, 30.0), battery_min=50.0)
    assert_windows(minutes, "nulls", [expected])


def test_aggregate_of_only_nulls_is_null_and_events_still_count(minutes):
    assert_windows(minutes, "all-null", [window("all-null", at(12, 0), 2)])


def test_last_value_ties_on_event_time_go_to_greatest_event_id(minutes):
    assert_windows(minutes, "last-tie", [window("last-tie", at(12, 0), 3, last=(9.0, 9.0, "nine"))])


def test_last_value_skips_events_where_it_is_null(minutes):
    expected = window("last-skips", at(12, 0), 3, last=(2.0, 3.0, "first"))
    assert_windows(minutes, "last-skips", [expected])


def test_window_start_is_inclusive_and_window_end_exclusive(minutes):
    assert_windows(
        minutes,
        "edges",
        [
            window("edges", at(12, 0), 2, temperature=(1.5, 1.0, 2.0)),
            window("edges", at(12, 1), 1, temperature=(3.0, 3.0, 3.0)),
        ],
    )


def test_window_at_23_59_is_that_day_and_00_00_the_next(minutes):
    assert at(23, 59).date() == date(2026, 3, 1)  # window() takes event_date from window_start
    assert_windows(
        minutes,
        "midnight",
        [
            window("midnight", at(23, 59), 1, temperature=(1.0, 1.0, 1.0)),
            window("midnight", at(0, 0, day=2), 1, temperature=(2.0, 2.0, 2.0)),
        ],
    )


def test_layer_and_computed_at_come_from_the_caller(spark):
    speed = aggregate_minutes(event_frame(spark, BASIC[:1]), LAYER_SPEED, COMPUTED_AT)
    caller_columns = StructType([MINUTE_SCHEMA["layer"], MINUTE_SCHEMA["computed_at"]])
    assert_rows_equal(
        speed.select(*caller_columns.fieldNames()), caller_columns, [(LAYER_SPEED, COMPUTED_AT)]
    )


def test_unknown_layer_is_refused(spark):
    with pytest.raises(ValueError, match="layer"):
        aggregate_minutes(event_frame(spark, BASIC[:1]), "lambda", COMPUTED_AT)
