"""dedup_first_received: one row per event_id, the first received copy, copies and contents.

Every scenario uses its own event_ids, so one deduplication of all of them (the module-scoped
``deduped`` fixture) serves every test; each test compares its own event_ids with chispa.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql.types import LongType, StructField, StructType

from contract.builders import (
    INGEST_TIME,
    Collected,
    RawRecord,
    assert_rows_equal,
    collect,
    event_frame,
    event_payload,
    raw_frame,
    typed_event,
)
from weir.contract import classify_records, dedup_first_received, valid_events
from weir.contract.dedup import first_received_with_contents, merge_first_received
from weir.schemas import EVENT_CONTENT_COLUMNS, EVENT_SCHEMA

DEDUP_SCHEMA = StructType(
    [
        *EVENT_SCHEMA.fields,
        StructField("received_copies", LongType(), False),
        StructField("distinct_contents", LongType(), False),
    ]
)
KINESIS_LONG = "49590338271490256608559692538361571095921575989136588802"  # 56 digits
KINESIS_SHORT = "9959033827149025660855969253836157109592157598913658880"  # 55 digits, smaller
SECOND = timedelta(seconds=1)


def copies_of(event_id: str, *variants: dict[str, Any]) -> list[dict[str, Any]]:
    return [typed_event(event_id=event_id, **variant) for variant in variants]


FIRST_RECEIVED = copies_of(
    "first-received",
    dict(ingest_time=INGEST_TIME + 2 * SECOND, source_offset="1", temperature_c=1.0),
    dict(ingest_time=INGEST_TIME, source_offset="3", temperature_c=3.0),
    dict(ingest_time=INGEST_TIME + SECOND, source_offset="2", temperature_c=2.0),
)
PARTITION_ORDER = copies_of(
    "partition-order",
    dict(source_partition="10", source_offset="0"),
    dict(source_partition="9", source_offset="5"),
)
OFFSET_ORDER = copies_of(
    "offset-order",
    dict(source_offset="10"),
    dict(source_offset="9"),
    dict(source_offset="100"),
)
KINESIS_ORDER = copies_of(
    "kinesis-order",
    dict(source="kinesis", source_partition="shardId-000000000001", source_offset=KINESIS_LONG),
    dict(source="kinesis", source_partition="shardId-000000000001", source_offset=KINESIS_SHORT),
)
# Landing-file partitions are paths; two that share a long prefix must still order by what
# follows it (nothing truncated).
LONG_PREFIX = "landing/2026/01/01/00/" + "x" * 200
LONG_PARTITION_ORDER = copies_of(
    "long-partition-order",
    dict(source="files", source_partition=LONG_PREFIX + "-b.jsonl", source_offset="1"),
    dict(source="files", source_partition=LONG_PREFIX + "-a.jsonl", source_offset="9"),
)
SOURCE_ORDER = copies_of(
    "source-order",
    dict(source="kinesis", source_offset="7"),
    dict(source="files", source_offset="7"),
    dict(source="kafka", source_offset="7"),
)
RETRIES = copies_of(
    "identical-retries",
    dict(source_offset="20"),
    dict(source_offset="21", ingest_time=INGEST_TIME + SECOND),
    dict(source="kinesis", source_partition="shardId-1", source_offset="22"),
)
CONFLICT = copies_of(
    "conflicting-copies",
    dict(source_offset="30"),
    dict(source_offset="31", temperature_c=99.9),
    dict(source_offset="32", temperature_c=99.9),
)
NULL_SWAP = copies_of(
    "null-swapped-copies",
    dict(source_offset="40", temperature_c=None, humidity_pct=5.0),
    dict(source_offset="41", temperature_c=5.0, humidity_pct=None),
)
CHANGED_VALUES: dict[str, Any] = {
    "device_id": "dev-2",
    "event_time": INGEST_TIME - timedelta(minutes=2),
    "schema_version": 2,
    "temperature_c": -1.0,
    "humidity_pct": 1.0,
    "battery_pct": 1.0,
    "speed_kmh": 1.0,
    "lat": 1.0,
    "lon": 1.0,
    "status": "parked",
}
ONE_FIELD_CHANGED = {
    field: copies_of(
        f"changed-{field}", dict(source_offset="50"), {field: value, "source_offset": "51"}
    )
    for field, value in CHANGED_VALUES.items()
}
UNIQUE = copies_of("unique", dict(source_offset="60"))

ALL_COPIES = [
    *FIRST_RECEIVED,
    *PARTITION_ORDER,
    *OFFSET_ORDER,
    *KINESIS_ORDER,
    *LONG_PARTITION_ORDER,
    *SOURCE_ORDER,
    *RETRIES,
    *CONFLICT,
    *NULL_SWAP,
    *(copy for pair in ONE_FIELD_CHANGED.values() for copy in pair),
    *UNIQUE,
]


@pytest.fixture(scope="module")
def deduped(spark: SparkSession) -> Collected:
    return collect(event_frame(spark, ALL_COPIES).transform(dedup_first_received))


def expected_row(winner: dict[str, Any], copies: int, contents: int) -> tuple:
    return (*(winner[f.name] for f in EVENT_SCHEMA.fields), copies, contents)


def assert_winners(deduped: Collected, rows: list[tuple]) -> None:
    ids = {row[0] for row in rows}
    assert_rows_equal(deduped, DEDUP_SCHEMA, rows, where=lambda row: row.event_id in ids)


def test_dedup_output_is_the_event_schema_plus_counts(deduped):
    assert [(f.name, f.dataType) for f in deduped.schema] == [
        (f.name, f.dataType) for f in DEDUP_SCHEMA
    ]


def test_first_received_duplicate_wins(deduped):
    assert_winners(deduped, [expected_row(FIRST_RECEIVED[1], copies=3, contents=3)])


def test_same_ingest_time_lower_partition_wins_in_numeric_order(deduped):
    assert_winners(deduped, [expected_row(PARTITION_ORDER[1], copies=2, contents=1)])


def test_same_partition_lower_offset_wins_in_numeric_order(deduped):
    assert_winners(deduped, [expected_row(OFFSET_ORDER[1], copies=3, contents=1)])


def test_long_kinesis_sequence_numbers_compare_numerically(deduped):
    assert_winners(deduped, [expected_row(KINESIS_ORDER[1], copies=2, contents=1)])


def test_partitions_sharing_a_long_prefix_order_by_what_follows_it(deduped):
    assert_winners(deduped, [expected_row(LONG_PARTITION_ORDER[1], 2, 1)])


def test_same_coordinates_smallest_source_name_wins(deduped):
    assert_winners(deduped, [expected_row(SOURCE_ORDER[1], copies=3, contents=1)])


def test_identical_retries_from_anywhere_are_one_content(deduped):
    assert_winners(deduped, [expected_row(RETRIES[0], copies=3, contents=1)])


def test_conflicting_duplicate_counts_distinct_contents(deduped):
    assert_winners(deduped, [expected_row(CONFLICT[0], copies=3, contents=2)])


def test_copies_differing_only_in_which_metric_is_null_are_distinct_contents(deduped):
    assert_winners(deduped, [expected_row(NULL_SWAP[0], copies=2, contents=2)])


def test_every_content_field_distinguishes_contents(deduped):
    # event_id is the key the copies share; every other content column is changed once.
    assert set(CHANGED_VALUES) == set(EVENT_CONTENT_COLUMNS) - {"event_id"}
    rows = [expected_row(pair[0], copies=2, contents=2) for pair in ONE_FIELD_CHANGED.values()]
    assert_winners(deduped, rows)


def test_unique_event_passes_through_as_one_copy(deduped):
    assert_winners(deduped, [expected_row(UNIQUE[0], copies=1, contents=1)])


def test_one_row_per_event_id(deduped):
    assert len(deduped.rows) == len({copy["event_id"] for copy in ALL_COPIES})


def test_winner_does_not_depend_on_input_order_or_partitioning(spark, deduped):
    shuffled = event_frame(spark, reversed(ALL_COPIES)).repartition(3)
    assert_rows_equal(shuffled.transform(dedup_first_received), DEDUP_SCHEMA, deduped.rows)


def test_invalid_copies_never_take_part(spark):
    later = INGEST_TIME + SECOND
    raw = raw_frame(
        spark,
        [
            RawRecord(event_payload(event_id="x", temperature_c=999), source_offset="1"),
            RawRecord(event_payload(event_id="x", event_time="soon"), source_offset="2"),
            RawRecord(event_payload(event_id="x", temperature_c=30), later, source_offset="3"),
        ],
    )
    winner = typed_event(event_id="x", temperature_c=30.0, source_offset="3", ingest_time=later)
    actual = raw.transform(classify_records).transform(valid_events).transform(dedup_first_received)

    assert_rows_equal(actual, DEDUP_SCHEMA, [expected_row(winner, copies=1, contents=1)])


@pytest.mark.parametrize("split_at", [1, len(ALL_COPIES) // 2, len(ALL_COPIES) - 1])
def test_folding_a_later_part_into_an_earlier_part_equals_deduplicating_both(spark, split_at):
    """The batch index: winners over old copies, merged with winners over new copies, are the
    winners over all copies, with copies added and content sets united."""
    earlier, later = ALL_COPIES[:split_at], ALL_COPIES[split_at:]
    folded = (
        event_frame(spark, earlier)
        .transform(first_received_with_contents)
        .unionByName(event_frame(spark, later).transform(first_received_with_contents))
        .transform(merge_first_received)
    )
    together = event_frame(spark, ALL_COPIES).transform(first_received_with_contents)

    assert_df_equality(folded, together, ignore_row_order=True, ignore_nullable=True)
