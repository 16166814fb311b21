"""Deduplicate valid events by event_id: the first received copy wins (docs/contract.md).

"First received" is the lowest ingest_time, then source partition, then source offset. Both
coordinates are strings (Kinesis sequence numbers fit no integer type), so they are compared
by (length, text): numeric order for numbers of any length written without leading zeros (as
every source writes them), and a total order for anything else, file paths included, with
nothing truncated. The source name and the event's content break any remaining tie, so the
winner never depends on partitioning or on the order Spark happens to read files.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from weir.schemas import (
    CONTENT_FINGERPRINTS,
    EVENT_COLUMNS,
    EVENT_CONTENT_COLUMNS,
    RECEIVED_COPIES,
)

DISTINCT_CONTENTS = "distinct_contents"
_FINGERPRINT = "_content_fingerprint"
_RANK = "_received_rank"


def received_order(prefix: str = "") -> Column:
    """A sortable struct: smaller means received earlier. Use with min() or orderBy()."""

    def column(name: str) -> Column:
        return F.col(f"{prefix}{name}")

    return F.struct(
        column("ingest_time").alias("ingest_time"),
        F.length(column("source_partition")).alias("partition_length"),
        column("source_partition").alias("partition"),
        F.length(column("source_offset")).alias("offset_length"),
        column("source_offset").alias("offset"),
        column("source").alias("source"),
    )


def content_fingerprint() -> Column:
    """A hash of what an event says (not where it came from): differs for conflicting copies.

    xxhash64 skips null inputs, so (null, 5.0) and (5.0, null) would hash alike: the null
    flags go in too, to tell which fields are null.
    """
    columns = [F.col(name) for name in EVENT_CONTENT_COLUMNS]
    return F.xxhash64(*columns, *(column.isNull() for column in columns))


def _in_received_order() -> Window:
    """Each event_id's rows, first received first; the event's columns break a tie."""
    return Window.partitionBy("event_id").orderBy(
        received_order(), *(F.col(c).asc_nulls_first() for c in EVENT_COLUMNS)
    )


def first_received_with_contents(events: DataFrame) -> DataFrame:
    """One row per event_id: the first received copy, how many copies there were, and the set
    of their content fingerprints (``content_fingerprints``, a sorted array).

    The batch layer's event index keeps these rows, so that a later run can fold new copies
    into them (``merge_first_received``) without reading the old copies again.
    """
    copies = Window.partitionBy("event_id")
    return (
        events.withColumn(_FINGERPRINT, content_fingerprint())
        .select(
            *EVENT_COLUMNS,
            F.row_number().over(_in_received_order()).alias(_RANK),
            F.count(F.lit(1)).over(copies).alias(RECEIVED_COPIES),
            F.array_sort(F.collect_set(_FINGERPRINT).over(copies)).alias(CONTENT_FINGERPRINTS),
        )
        .where(F.col(_RANK) == 1)
        .drop(_RANK)
    )


def dedup_first_received(events: DataFrame) -> DataFrame:
    """One row per event_id: the first received copy, plus how many copies and contents there were.

    Output: EVENT_SCHEMA columns, ``received_copies`` (>= 1) and ``distinct_contents`` (> 1
    marks a conflicting duplicate, a data-quality metric). Deterministic: the same input rows
    give the same output whatever their order or partitioning (the event's own columns break
    a tie in the received order).

    Window functions over one shuffle and one sort by (event_id, received order): a
    ``min(struct(...))`` aggregate would need a sort-based aggregation with a sorted partial
    step on each side of the shuffle, and a ``countDistinct`` a second aggregation.
    """
    return (
        first_received_with_contents(events)
        .withColumn(DISTINCT_CONTENTS, F.size(CONTENT_FINGERPRINTS).cast("long"))
        .drop(CONTENT_FINGERPRINTS)
    )


def merge_first_received(rows: DataFrame) -> DataFrame:
    """Fold rows of ``first_received_with_contents`` shape into one row per event_id.

    For rows computed over disjoint sets of copies (an index built from old records and the
    rows of new ones), the result is what ``first_received_with_contents`` gives over all the
    copies together: the winner is the smallest received order of the winners (each is the
    smallest of its set), copies add up, and the fingerprint sets unite.
    """
    per_event = Window.partitionBy("event_id")
    return (
        rows.select(
            *EVENT_COLUMNS,
            F.row_number().over(_in_received_order()).alias(_RANK),
            F.sum(RECEIVED_COPIES).over(per_event).alias(RECEIVED_COPIES),
            F.array_sort(
                F.array_distinct(F.flatten(F.collect_list(CONTENT_FINGERPRINTS).over(per_event)))
            ).alias(CONTENT_FINGERPRINTS),
        )
        .where(F.col(_RANK) == 1)
        .drop(_RANK)
    )
