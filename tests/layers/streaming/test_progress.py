"""One progress row and log line per micro-batch, read back by `weir stream status`."""

from __future__ import annotations

import json
from datetime import datetime

from chispa import assert_df_equality
from pyspark.sql import SparkSession

from weir.control.stream_progress import STATUS_COLUMNS, latest_progress
from weir.layers.streaming.progress import progress_line, progress_row
from weir.layers.streaming.queries import error_summary
from weir.schemas import (
    STREAM_PROGRESS_SCHEMA,
)

from .builders import (
    UTC,
    progress_report,
)

# --- progress rows ----------------------------------------------------------------------------


def test_progress_row_from_a_kafka_progress_report() -> None:
    report = {
        "id": "q-1",
        "runId": "r-1",
        "name": "raw-kafka",
        "timestamp": "2026-03-01T12:00:05.250Z",
        "batchId": 42,
        "numInputRows": 1500,
        "inputRowsPerSecond": 300.0,
        "processedRowsPerSecond": 750.5,
        "durationMs": {"triggerExecution": 2000, "addBatch": 1800},
        "eventTime": {"watermark": "2026-03-01T11:50:00.000Z"},
        "stateOperators": [{"numRowsTotal": 10}, {"numRowsTotal": 5}],
        "sources": [
            {
                "description": "KafkaV2[Subscribe[telemetry]]",
                "startOffset": {"telemetry": {"0": 100}},
                "endOffset": {"telemetry": {"0": 1600}},
                "latestOffset": {"telemetry": {"0": 1700}},
                "metrics": {"maxOffsetsBehindLatest": "100", "avgOffsetsBehindLatest": "100.0"},
            }
        ],
    }
    row = progress_row(report)
    assert row["query_name"] == "raw-kafka"
    assert row["batch_id"] == 42
    assert row["trigger_time"] == datetime(2026, 3, 1, 12, 0, 5, 250000, tzinfo=UTC)
    assert row["progress_date"] == datetime(2026, 3, 1).date()
    assert row["watermark"] == datetime(2026, 3, 1, 11, 50, tzinfo=UTC)
    assert row["offsets_behind_latest"] == 100
    assert row["state_rows"] == 15
    assert row["batch_duration_ms"] == 2000
    assert json.loads(row["end_offset"]) == {"telemetry": {"0": 1600}}
    line = progress_line(row)
    assert line.startswith("raw-kafka batch 42: 1500 rows 750 rows/s in 2.00s")
    assert "watermark 2026-03-01T11:50:00Z" in line
    assert "lag 100 offsets" in line


def test_stream_status_shows_the_last_batch_of_each_query(spark: SparkSession) -> None:
    reports = [
        progress_report("raw-files", 0, 1, 10),
        progress_report("raw-files", 1, 9, 3),
        progress_report("speed-files", 4, 5, 7),
        progress_report("speed-files", 3, 2, 9),
    ]
    progress = spark.createDataFrame([progress_row(r) for r in reports], STREAM_PROGRESS_SCHEMA)
    expected = spark.createDataFrame(
        [
            progress_row(progress_report("raw-files", 1, 9, 3)),
            progress_row(progress_report("speed-files", 4, 5, 7)),
        ],
        STREAM_PROGRESS_SCHEMA,
    ).select(*STATUS_COLUMNS)
    assert_df_equality(latest_progress(progress), expected, ignore_row_order=True)


def test_error_summary_names_the_exception_of_a_foreach_batch_function() -> None:
    message = (
        "An exception was raised by the Python Proxy. Return Message: Traceback (most recent "
        'call last):\n  File "x.py", line 1, in f\n    boom()\nRuntimeError: disk on fire\n\n'
        "=== Streaming Query ===\nIdentifier: raw-files\n"
    )
    assert error_summary(message) == "RuntimeError: disk on fire"
    assert error_summary("[STREAM_FAILED] Query failed: lost\n\tat x.y\n") == (
        "[STREAM_FAILED] Query failed: lost"
    )
