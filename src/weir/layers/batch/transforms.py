"""The batch layer's pure transforms: which raw records a run reads, the first-received
winners, the event index's rows, the dates whose view rows can change, the minute view.

Every function here is ``DataFrame -> DataFrame`` (or builds a predicate): no path, clock or
session. The contract's own transforms (``weir.contract``) do the parsing, validation, dedup
and aggregation; these compose them for a run (docs/batch.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Optional

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from weir.contract import aggregate_minutes, classify_records, valid_events
from weir.contract.dedup import CONTENT_FINGERPRINTS, RECEIVED_COPIES, first_received_with_contents
from weir.schemas import EVENT_COLUMNS, LAYER_BATCH, SOURCE_COORDINATES
from weir.sources.files import landing_line_records, relative_to


def received_before(raw: DataFrame, cutoff: datetime) -> DataFrame:
    """The raw records a run with this cutoff reads: ``ingest_time < cutoff``."""
    return raw.where(F.col("ingest_time") < F.lit(cutoff))


def first_received_events(raw: DataFrame) -> DataFrame:
    """Raw records -> one valid event per event_id, the first received copy (shared contract),
    with its copies and content fingerprints (the event index's columns)."""
    return (
        raw.transform(classify_records)
        .transform(valid_events)
        .transform(first_received_with_contents)
    )


def event_index_rows(winners: DataFrame) -> DataFrame:
    """BATCH_EVENTS_SCHEMA rows from ``first_received_with_contents`` rows."""
    return winners.select(
        *EVENT_COLUMNS,
        RECEIVED_COPIES,
        CONTENT_FINGERPRINTS,
        event_date_of_event().alias("event_date"),
    )


def event_date_of_event() -> Column:
    """The view's partition for an event: ``event_date`` is the UTC date of ``window_start``,
    and flooring ``event_time`` to its minute never changes its date."""
    return F.to_date(F.col("event_time"))


def changed_event_dates(new_events: DataFrame, deduped: DataFrame, since: datetime) -> DataFrame:
    """The event dates whose minute rows may differ from a view built from records < ``since``.

    ``deduped`` holds the winners over ALL history (``first_received_with_contents``);
    ``new_events`` every valid copy with ``ingest_time >= since``. The view depends on
    winners only, and the received order begins with ``ingest_time``, so:

    * an event_id whose winner was ingested before ``since`` had that same winner before:
      nothing about it changed, whatever twins arrived since (a late retry touches nothing);
    * an event_id whose winner was ingested at or after ``since`` has ALL its copies there:
      the old winner (if any) and the new one are both among ``new_events``, so the dates of
      its copies cover the date it leaves and the date it lands on (a conflicting twin can
      move an event between days).

    Output: one column ``event_date``, distinct.
    """
    unsettled = deduped.where(F.col("ingest_time") >= F.lit(since)).select("event_id")
    return (
        new_events.join(unsettled, "event_id", "left_semi")
        .select(event_date_of_event().alias("event_date"))
        .distinct()
    )


def minute_rows(
    winners: DataFrame, computed_at: datetime, dates: Optional[Sequence[date]] = None
) -> DataFrame:
    """The batch view's rows (MINUTE_SCHEMA) from event index rows (``event_index_rows``),
    for the given event dates only or for all. Read from the index table, the date filter
    is on its partition column, so Delta skips the other dates' files."""
    if dates is not None:
        winners = winners.where(F.col("event_date").isin(list(dates)))
    return aggregate_minutes(winners, LAYER_BATCH, computed_at)


def records_new_since(
    raw: DataFrame, baseline_raw: DataFrame, since: datetime, baseline_cutoff: datetime
) -> DataFrame:
    """The records of ``raw`` (this run's snapshot, ``ingest_time < C``) that the baseline did
    not read: those ingested at or after its cutoff, and those ingested in [since, cutoff)
    that are missing from its snapshot ``baseline_raw`` (a micro-batch committed late).

    Every other record of ``raw`` has ``ingest_time < since``, so the baseline read it (see
    ``weir.layers.batch.plan.changes_since``). Source coordinates identify a record: the
    archivers write each once.
    """
    received = F.col("ingest_time")
    new = raw.where((received >= F.lit(since)) & (F.col("ingest_date") >= F.lit(since.date())))
    if since >= baseline_cutoff:
        return new
    window = (received >= F.lit(since)) & (received < F.lit(baseline_cutoff))
    read_before = baseline_raw.where(window & (F.col("ingest_date") >= F.lit(since.date()))).select(
        *SOURCE_COORDINATES
    )
    return new.where(~window).unionByName(
        new.where(window).join(read_before, list(SOURCE_COORDINATES), "left_anti")
    )


def adopted_records(lines: DataFrame, prefix: str) -> DataFrame:
    """RAW rows (RAW_SCHEMA) from the lines of files under ``prefix``, one per line, as the
    files source maps them, with ``ingest_time`` = the file's modification time.

    Input columns: those of ``weir.sources.files.landing_lines``. Pure, a batch step (the lines
    are numbered per file without a file being read whole). The modification time is when the
    file reached the store (on S3: when Firehose delivered it), the closest to "received" the
    file itself knows, and the same on every re-run: so a record is stamped the same whichever
    run adopts it (docs/batch.md, "Adopting a lake").
    """
    stamped = lines.withColumn("ingest_time", F.col("file_modification_time")).withColumn(
        "ingest_date", F.to_date(F.col("file_modification_time"))
    )
    return landing_line_records(stamped, prefix)


def unarchived_files(listing: DataFrame, archived: DataFrame, prefix: str) -> DataFrame:
    """The files of ``listing`` (``file_path``) whose path under ``prefix`` is not in
    ``archived`` (``source_partition``, the files source's key of a file). Pure."""
    keyed = listing.withColumn("source_partition", relative_to(F.col("file_path"), prefix))
    return keyed.join(archived, "source_partition", "left_anti").select("file_path")
