"""The streaming benchmark's arithmetic: which micro-batch made a record visible, and when.

A record is visible when the micro-batch whose Kafka offset range holds it has ended (for Weir,
the speed query's batch: its MERGE into SPEED committed); its latency is that instant minus the
time it was produced."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from weir.bench.streaming import latency_summary, progress_rows, record_batches
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
            start_offset=None if start is None else json.dumps(_offset(start)),
            end_offset=json.dumps(_offset(end)),
            progress_json="{}",
            progress_date=T0.date(),
        )
        full.append(tuple(row[name] for name in STREAM_PROGRESS_SCHEMA.fieldNames()))
    return spark.createDataFrame(full, STREAM_PROGRESS_SCHEMA)


def _offset(position: dict) -> dict:
    """Kafka offsets {partition: offset} of topic "t", or a Delta offset (version, index)."""
    if isinstance(position, tuple):
        version, index = position
        return {"sourceVersion": 1, "reservoirVersion": version, "index": index}
    return {"t": position}


def raw(spark: SparkSession, rows: list[tuple]) -> object:
    """(partition, offset, produced second) per record."""
    return spark.createDataFrame(
        [(p, o, T0.replace(second=s).timestamp()) for p, o, s in rows],
        "partition string, offset long, sent_at double",
    )


def test_the_raw_batch_that_archived_each_record_is_found_by_kafka_offsets(
    spark: SparkSession,
) -> None:
    batches = progress(
        spark,
        [
            ("raw-kafka", 0, 2, 1500, 3, None, {"0": 2, "1": 1}),
            ("raw-kafka", 1, 5, 500, 2, {"0": 2, "1": 1}, {"0": 3, "1": 2}),
            ("raw-kafka", 2, 6, 100, 0, {"0": 3, "1": 2}, {"0": 3, "1": 2}),  # idle
            ("other", 0, 2, 9000, 5, None, {"0": 3, "1": 2}),  # another query
        ],
    )
    records = raw(spark, [("0", 0, 1), ("0", 1, 2), ("1", 0, 1), ("0", 2, 4), ("1", 1, 5)])

    found = record_batches(batches, records, "raw-kafka").select(
        "partition", "offset", "batch_id", "visible_at"
    )

    end_0, end_1 = T0.timestamp() + 3.5, T0.timestamp() + 5.5  # :02 + 1.5 s, :05 + 0.5 s
    expected = spark.createDataFrame(
        [
            ("0", 0, 0, end_0),
            ("0", 1, 0, end_0),
            ("1", 0, 0, end_0),
            ("0", 2, 1, end_1),
            ("1", 1, 1, end_1),
        ],
        "partition string, offset long, batch_id long, visible_at double",
    )
    assert_df_equality(found, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize("offset", [3, 10])
def test_a_record_no_batch_has_read_yet_has_no_batch(spark: SparkSession, offset: int) -> None:
    batches = progress(spark, [("raw-kafka", 0, 2, 1000, 3, None, {"0": 3})])

    assert record_batches(batches, raw(spark, [("0", offset, 1)]), "raw-kafka").count() == 0


def test_progress_reports_become_progress_rows_with_their_batch_end(spark: SparkSession) -> None:
    report = {
        "id": "q",
        "runId": "r",
        "name": "plain-bronze",
        "timestamp": "2026-03-01T10:00:02.000Z",
        "batchId": 4,
        "numInputRows": 3,
        "durationMs": {"triggerExecution": 1500},
        "sources": [{"startOffset": {"t": {"0": 2}}, "endOffset": {"t": {"0": 5}}}],
    }
    (row,) = progress_rows(spark, [report]).collect()
    assert (row.query_name, row.batch_id, row.num_input_rows) == ("plain-bronze", 4, 3)
    records = raw(spark, [("0", 2, 1), ("0", 4, 1), ("0", 5, 1)])
    found = record_batches(progress_rows(spark, [report]), records, "plain-bronze")
    assert sorted(r.offset for r in found.collect()) == [2, 4]


def test_latency_summary_gives_the_quantiles_of_the_records_measured(spark: SparkSession) -> None:
    latencies = spark.createDataFrame(
        [(float(n), n / 10) for n in range(1, 101)], "sent_at double, latency_s double"
    )
    summary = latency_summary(latencies)
    assert summary["records"] == 100 and summary["max_s"] == 10.0
    assert 4.9 <= summary["p50_s"] <= 5.1 and 9.8 <= summary["p99_s"] <= 10.0
