"""A tiny, consistent lake for the data-quality tests, and its parts as explicit rows.

The good lake: 30 RAW records received before the cutoff (29 valid, 1 malformed), the one
QUARANTINE row, one batch run that read them (29 valid, 1 quarantined), BATCH and SPEED rows
that agree, and a unified table fresh at ``NOW``. Every check passes on it; each test breaks
one thing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from typing import Any, Optional

from pyspark.sql import DataFrame, SparkSession

from weir.contract.rules import Reason
from weir.control import MODE_FULL, RUN_SUCCEEDED, BatchRun, record_batch_run
from weir.lake import LakeLayout
from weir.quality.tables import Snapshot, relative_name
from weir.schemas import (
    LAYER_BATCH,
    LAYER_SPEED,
    MINUTE_PARTITION_COLUMNS,
    MINUTE_SCHEMA,
    QUARANTINE_SCHEMA,
    RAW_PARTITION_COLUMNS,
    RAW_SCHEMA,
)

UTC = timezone.utc
CUTOFF = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HORIZON = CUTOFF - timedelta(minutes=10)
NOW = CUTOFF + timedelta(minutes=5)  # the check run's clock
RECEIVED = CUTOFF - timedelta(minutes=20)
DEVICES = ("dev-1", "dev-2")
# Windows of the views: 11:40 .. 11:57 (window_end up to 11:58, 7 minutes before NOW).
FIRST_WINDOW = CUTOFF - timedelta(minutes=20)
WINDOWS = 18


def raw_row(offset: int, payload: str, ingest_time: datetime = RECEIVED) -> tuple:
    return (
        "kafka",
        "telemetry",
        "0",
        str(offset),
        None,
        payload,
        ingest_time,
        ingest_time,
        ingest_time.date(),
        None,  # payload_bytes
    )


def raw_rows(valid: int = 29, malformed: int = 1) -> list[tuple]:
    rows = [raw_row(n, f'{{"event_id": "evt-{n}"}}') for n in range(valid)]
    rows += [raw_row(valid + n, '{"event_id": "broken') for n in range(malformed)]
    return rows


def quarantine_row(offset: int, reason: Optional[str] = Reason.MALFORMED_JSON) -> tuple:
    raw = raw_row(offset, '{"event_id": "broken')
    return (*raw[:-2], reason, None, None, *raw[-2:])


def minute_row(
    device: str, start: datetime, layer: str, event_count: int = 3, **values: Any
) -> tuple:
    row = {
        "device_id": device,
        "window_start": start,
        "window_end": start + timedelta(minutes=1),
        "event_date": start.date(),
        "event_count": event_count,
        "temperature_c_avg": 20.0,
        "temperature_c_min": 19.0,
        "temperature_c_max": 21.0,
        "humidity_pct_avg": 50.0,
        "battery_pct_min": 80.0,
        "speed_kmh_avg": 30.0,
        "speed_kmh_max": 40.0,
        "lat_last": 37.5,
        "lon_last": 127.0,
        "status_last": "driving",
        "layer": layer,
        "computed_at": NOW,
        **values,
    }
    return tuple(row[name] for name in MINUTE_SCHEMA.fieldNames())


def view_rows(layer: str) -> list[tuple]:
    return [
        minute_row(device, FIRST_WINDOW + timedelta(minutes=n), layer)
        for device in DEVICES
        for n in range(WINDOWS)
    ]


def unified_rows() -> list[tuple]:
    rows = []
    for row in view_rows(LAYER_BATCH):
        end = row[MINUTE_SCHEMA.fieldNames().index("window_end")]
        layer = LAYER_BATCH if end <= HORIZON else LAYER_SPEED
        rows.append((*row[:-2], layer, row[-1]))
    return rows


def batch_run(**changes: Any) -> BatchRun:
    run = BatchRun(
        run_id="batch-20260302T120500Z-good0001",
        status=RUN_SUCCEEDED,
        mode=MODE_FULL,
        cutoff=CUTOFF,
        horizon=HORIZON,
        raw_version=0,
        records_in=30,
        valid=29,
        quarantined=1,
        duplicates=0,
        conflicting_duplicates=0,
        windows_written=WINDOWS * len(DEVICES),
        started_at=CUTOFF,
        finished_at=CUTOFF + timedelta(minutes=1),
        view_version=0,
        index_version=0,
    )
    return replace(run, **changes)


def frame(spark: SparkSession, rows: Iterable[tuple], schema=MINUTE_SCHEMA) -> DataFrame:
    return spark.createDataFrame(list(rows), schema)


def snapshots(
    spark: SparkSession, lake: LakeLayout, frames: dict[str, DataFrame]
) -> dict[str, Snapshot]:
    """In-memory snapshots (version 7) by lake path, for :func:`weir.quality.run.plan_checks`."""
    return {
        path: Snapshot(relative_name(lake.root, path), 7, rows) for path, rows in frames.items()
    }


def good_frames(spark: SparkSession, lake: LakeLayout) -> dict[str, DataFrame]:
    return {
        lake.raw: frame(spark, raw_rows(), RAW_SCHEMA),
        lake.quarantine: frame(spark, [quarantine_row(29)], QUARANTINE_SCHEMA),
        lake.batch: frame(spark, view_rows(LAYER_BATCH)),
        lake.speed: frame(spark, view_rows(LAYER_SPEED)),
        lake.serving: frame(spark, unified_rows()),
    }


def write_lake(
    spark: SparkSession,
    lake: LakeLayout,
    frames: dict[str, DataFrame],
    runs: Sequence[BatchRun] = (),
) -> None:
    """Write ``frames`` (by lake path) as Delta tables and record ``runs`` in ``_control``."""
    partitions = {
        lake.raw: RAW_PARTITION_COLUMNS,
        lake.quarantine: RAW_PARTITION_COLUMNS,
    }
    for path, rows in frames.items():
        columns = partitions.get(path, MINUTE_PARTITION_COLUMNS)
        rows.write.format("delta").partitionBy(*columns).mode("append").save(path)
    for run in runs:
        record_batch_run(spark, lake, run)


def event_date() -> date:
    return FIRST_WINDOW.date()
