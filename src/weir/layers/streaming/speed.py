"""The speed layer: per-device, per-minute views from the stream, upserted into SPEED.

The same contract transforms as the batch layer (``classify_records``, ``valid_events``,
``aggregate_minutes``); what differs is streaming state: an event-time watermark of the allowed
lateness (docs/contract.md, "The serving rule"), duplicates dropped within it, and windows
emitted in update mode. Each micro-batch carries the full current aggregate of every window it
changed, so ``upsert_minutes`` (a MERGE on the window key) is idempotent: a replayed batch
writes the same values again.

Approximate by design: events later than the watermark are left to the batch layer, and
among copies of one event that arrive in the same micro-batch any one may win (the batch
layer applies first-received exactly).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import date, datetime, timezone
from functools import partial
from typing import Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.contract import aggregate_minutes, classify_records, valid_events
from weir.crashpoints import SPEED_BEFORE_MERGE, crash_point
from weir.delta import retry_conflicts
from weir.schemas import LAYER_SPEED, MINUTE_KEY

log = logging.getLogger("weir.stream")


def source_rows(raw: DataFrame, source: str, stream: str) -> DataFrame:
    """The RAW rows one source and stream archived (a topic, a Kinesis stream, a landing
    folder). Pure."""
    return raw.where((F.col("source") == source) & (F.col("source_stream") == stream))


def raw_stream(spark: SparkSession, raw_path: str, source: str, stream: str) -> DataFrame:
    """A streaming DataFrame of the RAW rows of one source and stream: the RAW Delta table as
    a streaming source, so the speed layer reads what the archiver committed, not the source
    a second time."""
    return source_rows(spark.readStream.format("delta").load(raw_path), source, stream)


def speed_minutes(records: DataFrame, allowed_lateness_minutes: int) -> DataFrame:
    """Streaming telemetry_minute rows (MINUTE_SCHEMA, layer 'speed') from RAW-shaped rows.

    Use with output mode ``update``: every micro-batch emits the windows it changed, each with
    its full aggregate so far; state for windows behind the watermark is dropped.
    """
    events = (
        records.transform(classify_records)
        .transform(valid_events)
        .withWatermark("event_time", f"{allowed_lateness_minutes} minutes")
        .dropDuplicatesWithinWatermark(["event_id"])
    )
    return aggregate_minutes(events, LAYER_SPEED, computed_at=F.current_timestamp())


def upsert_minutes(
    spark: SparkSession,
    path: str,
    minutes: DataFrame,
    dates: Optional[Sequence[date]] = None,
    since: Optional[datetime] = None,
) -> None:
    """MERGE per-minute rows into the Delta table at ``path`` by (device_id, window_start).

    Idempotent: a row replaces the window's previous values, inserting unseen windows.
    ``dates``: the event dates ``minutes`` holds, and ``since`` its earliest ``window_start``,
    when the caller knows them. The target is then read in those partitions only, and within
    them only in files whose ``window_start`` statistics reach ``since`` (literal predicates
    Delta prunes by), so a MERGE costs the open windows, not the day's history.
    """
    from delta.tables import DeltaTable

    target = F.col("t.window_start")
    condition = F.lit(True)
    for column in MINUTE_KEY:
        condition = condition & (F.col(f"t.{column}") == F.col(f"s.{column}"))
    if dates is not None:
        if not dates:
            return  # no dates, no rows: nothing to merge
        condition = condition & F.col("t.event_date").isin(sorted(set(dates)))
    if since is not None:
        condition = condition & (target >= F.lit(since))
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(minutes.alias("s"), condition)
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )


SPEED_MERGE_ATTEMPTS = 5  # one try and four retries after conflicting commits


class SpeedUpserter:
    """``foreachBatch`` function of the speed layer: upsert the changed windows into SPEED."""

    def __init__(self, speed_path: str) -> None:
        self.speed_path = speed_path

    def __call__(self, minutes: DataFrame, batch_id: int) -> None:
        # Persisted: MERGE reads its source twice, and recomputing a stateful batch is waste.
        # One small job fills the cache and bounds the MERGE (dates, earliest window); a batch
        # that changed no window (a watermark-only batch) makes no commit.
        started = time.monotonic()
        minutes.persist()
        try:
            bounds = minutes.agg(
                F.count(F.lit(1)).alias("windows"),
                F.collect_set("event_date").alias("dates"),
                F.min("window_start").alias("since"),
            ).first()
            computed = time.monotonic()
            if bounds["dates"]:
                crash_point(SPEED_BEFORE_MERGE)
                # A concurrent OPTIMIZE (weir maintain) or merge may commit to the same files
                # first: the MERGE writes the same values again, so retrying it is safe.
                retry_conflicts(
                    partial(
                        upsert_minutes,
                        minutes.sparkSession,
                        self.speed_path,
                        minutes,
                        bounds["dates"],
                        _aware_utc(bounds["since"]),
                    ),
                    attempts=SPEED_MERGE_ATTEMPTS,
                    what=f"speed batch {batch_id}: MERGE into {self.speed_path}",
                    hint="another writer keeps committing to SPEED's files; is `weir maintain` "
                    "running in a loop?",
                )
        finally:
            minutes.unpersist()
        log.info(
            "speed batch %d: %d windows on %d dates, computed in %.2fs, merged in %.2fs",
            batch_id,
            bounds["windows"],
            len(bounds["dates"]),
            computed - started,
            time.monotonic() - computed,
        )


def _aware_utc(moment: datetime) -> datetime:
    """A window start collected from Spark (naive, in the Python process's local zone) as an
    aware instant, so the literal it becomes means the same instant in the session's zone."""
    return moment.astimezone(timezone.utc)
