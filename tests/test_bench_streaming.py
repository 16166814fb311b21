"""The streaming benchmark's arithmetic: which micro-batch made a record visible, and when.

A record is archived by the raw batch whose Kafka offset range holds it (``record_batches``);
that batch committed one RAW version (its transaction id); the record is visible once the
first speed batch whose Delta end offset reaches that version has ended. Its latency is that
instant minus the time it was produced."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from weir.bench.streaming import record_batches, record_latencies, version_visibility
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


def delta_log(spark: SparkSession, commits: list[tuple]) -> object:
    """(version, archiver batch id or None) per RAW commit, as the JSON log reads."""
    return spark.createDataFrame(
        [
            (f"file:/lake/raw/_delta_log/{version:020d}.json", None if b is None else (b, "app"))
            for version, b in commits
        ],
        "file string, txn struct<version:long, appId:string>",
    )


def raw(spark: SparkSession, rows: list[tuple]) -> object:
    """(partition, offset, produced second) per record."""
    return spark.createDataFrame(
        [(p, str(o), T0.replace(second=s)) for p, o, s in rows],
        "source_partition string, source_offset string, arrival_time timestamp",
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


def test_a_raw_version_is_visible_when_the_first_speed_batch_reaching_it_ends(
    spark: SparkSession,
) -> None:
    batches = progress(
        spark,
        [
            # The first batch reads the initial snapshot (version 0) and versions 1-2.
            ("speed-kafka", 0, 2, 1000, 9, None, (2, 0)),
            # Ends at (4, -1): version 3 read, none of version 4.
            ("speed-kafka", 1, 4, 2000, 5, (2, 0), (4, -1)),
            ("speed-kafka", 2, 7, 500, 0, (4, -1), (4, -1)),  # idle
            ("speed-kafka", 3, 8, 500, 4, (4, -1), (4, 1)),
        ],
    )

    visible = version_visibility(batches, "speed-kafka")

    at = T0.timestamp()
    expected = spark.createDataFrame(
        [(0, at + 3.0), (1, at + 3.0), (2, at + 3.0), (3, at + 6.0), (4, at + 8.5)],
        "version long, visible_at double",
    )
    assert_df_equality(visible, expected, ignore_row_order=True, ignore_nullable=True)


def test_record_latency_runs_from_sending_to_the_speed_batch_that_read_its_raw_version(
    spark: SparkSession,
) -> None:
    batches = progress(
        spark,
        [
            ("raw-kafka", 0, 1, 1000, 2, None, {"0": 2}),  # ends :02, commits version 1
            ("raw-kafka", 1, 3, 1000, 1, {"0": 2}, {"0": 3}),  # ends :04, commits version 3
            ("speed-kafka", 0, 2, 1500, 2, None, (1, 0)),  # reads 0-1, ends :03.5
            ("speed-kafka", 1, 5, 500, 1, (1, 0), (3, 0)),  # reads 2-3, ends :05.5
        ],
    )
    log = delta_log(spark, [(0, None), (1, 0), (2, None), (3, 1)])  # 0: created, 2: maintenance
    records = raw(spark, [("0", 0, 0), ("0", 1, 1), ("0", 2, 3)])

    latencies = record_latencies(batches, records, log, "raw-kafka", "speed-kafka").select(
        "offset", "version", "latency_s"
    )

    expected = spark.createDataFrame(
        [(0, 1, 3.5), (1, 1, 2.5), (2, 3, 2.5)], "offset long, version long, latency_s double"
    )
    assert_df_equality(latencies, expected, ignore_row_order=True, ignore_nullable=True)
