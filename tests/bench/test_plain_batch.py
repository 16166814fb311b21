"""The plain batch job of `weir bench plain-batch`: what a data engineer writes first (one
from_json, a validity filter, dropDuplicates(event_id), a window groupBy). Its output must be
a real batch view, or the comparison with Weir's rebuild would flatter it."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from weir.bench.plain_batch import plain_batch_view

RECEIVED = datetime(2026, 3, 1, 10, 5, tzinfo=timezone.utc)


def payload(event_id: str, second: int, temperature: float = 20.0, **extra: object) -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "device_id": "vehicle-1",
            "event_time": f"2026-03-01T10:00:{second:02d}Z",
            "temperature_c": temperature,
            **extra,
        }
    )


def raw(spark: SparkSession, payloads: list[str]):
    return spark.createDataFrame(
        [(p, RECEIVED) for p in payloads], "payload string, ingest_time timestamp"
    )


def test_valid_events_are_counted_once_per_minute_and_invalid_ones_are_dropped(
    spark: SparkSession,
) -> None:
    payloads = [
        payload("e1", 1, 10.0),
        payload("e1", 1, 10.0),  # a producer retry: counted once
        payload("e2", 30, 30.0),
        payload("e3", 40, 999.0),  # out of range: dropped
        '{"event_id": "e4", "device_id": "vehicle-1"',  # malformed: dropped
        json.dumps({"device_id": "vehicle-1", "event_time": "2026-03-01T10:00:50Z"}),  # no id
    ]
    view = plain_batch_view(raw(spark, payloads)).collect()

    assert len(view) == 1
    minute = view[0]
    assert minute["device_id"] == "vehicle-1"
    assert minute["window_start"] == datetime(2026, 3, 1, 10, 0)
    assert minute["event_count"] == 2
    assert minute["temperature_c_avg"] == 20.0
    assert minute["temperature_c_max"] == 30.0


def test_events_of_different_minutes_fall_in_different_windows(spark: SparkSession) -> None:
    payloads = [
        payload("e1", 1),
        json.dumps({**json.loads(payload("e2", 1)), "event_time": "2026-03-01T10:01:01Z"}),
    ]
    view = plain_batch_view(raw(spark, payloads))

    counts = {r["window_start"].minute: r["event_count"] for r in view.collect()}
    assert counts == {0: 1, 1: 1}
    assert view.where(F.col("event_date").isNull()).count() == 0
