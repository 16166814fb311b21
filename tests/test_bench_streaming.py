"""The streaming benchmark's arithmetic: which micro-batch made a record visible, and when.

``record_latencies`` joins RAW records to the speed query's progress rows by Kafka partition and
offset range; a record's latency is the end of its batch minus the time it was produced."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from weir.bench.streaming import record_latencies
from weir.schemas import STREAM_PROGRESS_SCHEMA

T0 = datetime(2026, 3, 1, 10, 0, 0, tzinfo=timezone.utc)


def progress(spark: SparkSession, rows: list[tuple]) -> object:
    """(query, batch_id, trigger second, duration ms, input rows, start, end) per batch."""
    full = []
    for query, batch, second, duration, inputs, start, end in rows:
        row = dict.fromkeys(STREAM_PROGRESS_SCHEMA.fieldNames())
        row.update(
            query_name=query,
            query_id="q",
            run_id="r",
            batch_id=batch,
            trigger_time=T0.replace(second=second),
            num_input_rows=inputs,
            batch_duration_ms=duration,
            start_offset=None if start is None else json.dumps({"t": start}),
            end_offset=json.dumps({"t": end}),
            progress_json="{}",
            progress_date=T0.date(),
        )
        full.append(tuple(row[name] for name in STREAM_PROGRESS_SCHEMA.fieldNames()))
    return spark.createDataFrame(full, STREAM_PROGRESS_SCHEMA)


def raw(spark: SparkSession, rows: list[tuple]) -> object:
    """(partition, offset, produced second) per record."""
    return spark.createDataFrame(
        [(p, str(o), T0.replace(second=s)) for p, o, s in rows],
        "source_partition string, source_offset string, arrival_time timestamp",
    )


def test_each_record_is_visible_when_the_speed_batch_that_read_it_ends(
    spark: SparkSession,
) -> None:
    batches = progress(
        spark,
        [
            ("speed-kafka", 0, 2, 1500, 3, None, {"0": 2, "1": 1}),
            ("speed-kafka", 1, 5, 500, 2, {"0": 2, "1": 1}, {"0": 3, "1": 2}),
            ("speed-kafka", 2, 6, 100, 0, {"0": 3, "1": 2}, {"0": 3, "1": 2}),  # idle
            ("raw-kafka", 0, 2, 9000, 5, None, {"0": 3, "1": 2}),  # another query
        ],
    )
    records = raw(spark, [("0", 0, 1), ("0", 1, 2), ("1", 0, 1), ("0", 2, 4), ("1", 1, 5)])

    latencies = record_latencies(batches, records, "speed-kafka").select(
        "partition", "offset", "batch_id", "latency_s"
    )

    expected = spark.createDataFrame(
        [
            ("0", 0, 0, 2.5),  # produced at :01, batch 0 ended at :02 + 1.5 s
            ("0", 1, 0, 1.5),
            ("1", 0, 0, 2.5),
            ("0", 2, 1, 1.5),  # batch 1: :05 + 0.5 s
            ("1", 1, 1, 0.5),
        ],
        "partition string, offset long, batch_id long, latency_s double",
    )
    assert_df_equality(latencies, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize("offset", [3, 10])
def test_a_record_no_batch_has_read_yet_has_no_latency(spark: SparkSession, offset: int) -> None:
    batches = progress(spark, [("speed-kafka", 0, 2, 1000, 3, None, {"0": 3})])

    latencies = record_latencies(batches, raw(spark, [("0", offset, 1)]), "speed-kafka")

    assert latencies.count() == 0
