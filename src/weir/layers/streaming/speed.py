"""The speed layer: per-device, per-minute views from the stream, appended to SPEED.

The same contract transforms as the batch layer (``classify_records``, ``valid_events``,
``aggregate_minutes``); what differs is streaming state: an event-time watermark of the allowed
lateness (docs/contract.md, "The serving rule"), duplicates dropped within it, and windows
emitted in update mode. Each micro-batch carries the full current aggregate of every window it
changed, stamped with the batch's timestamp (``computed_at``), and ``SpeedAppender`` appends
them as new versions of those windows; readers keep each window's newest version
(:mod:`weir.speed_table`). A replayed batch appends the same versions again, which readers
collapse to one.

Approximate by design: events later than the watermark are left to the batch layer, and
among copies of one event that arrive in the same micro-batch any one may win (the batch
layer applies first-received exactly).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.contract import aggregate_minutes, classify_records, valid_events
from weir.crashpoints import SPEED_BEFORE_WRITE, crash_point
from weir.delta import append_marked, retry_conflicts
from weir.schemas import LAYER_SPEED, MINUTE_PARTITION_COLUMNS
from weir.speed_table import compact_speed

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


SPEED_WRITE_ATTEMPTS = 5  # one try and four retries after conflicting commits


def append_versions(minutes: DataFrame, path: str, writer: str, batch_id: int) -> None:
    """Append a micro-batch's windows to SPEED as new versions: a blind append, one Spark job.

    The commit carries the writer's mark (which query and batch appended these versions, for
    whoever reads the history); nothing checks it. Whether the batch was appended before
    does not matter: a replay appends the same versions again, with the same ``computed_at``,
    and readers keep one of them (:func:`weir.speed_table.newest_versions`).
    """
    append_marked(minutes, path, MINUTE_PARTITION_COLUMNS, writer, batch_id)


# How often the stream deletes SPEED's superseded versions (SpeedCompactor).
SPEED_COMPACT_EVERY_SECONDS = 60.0
# Each compaction looks back this far before the previous one's start: a micro-batch replayed
# after a restart appends versions stamped with its first attempt's timestamp. Older ones are
# left to `weir maintain`; readers are right either way.
SPEED_COMPACT_OVERLAP = timedelta(minutes=5)


class SpeedCompactor:
    """Deletes SPEED's superseded window versions from the running stream
    (:func:`weir.speed_table.compact_speed`): at most every ``every`` seconds, each time over
    the versions computed since the previous compaction (less :data:`SPEED_COMPACT_OVERLAP`).
    Bounds the table's growth between two `weir maintain` runs.

    It runs on the speed query's own thread, after a micro-batch's append, not beside it: a
    Delta table outside Databricks is Serializable (``delta.isolationLevel`` accepts no other
    value), so an append committed to a date a compaction is reading makes the compaction fail
    (ConcurrentAppendException). On a thread of its own it lost to the stream's appends
    whenever they came faster than it ran (docs/streaming.md). A failed compaction is logged
    and the next one tries again: the stream never stops for it.
    """

    def __init__(
        self,
        path: str,
        every: float = SPEED_COMPACT_EVERY_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.every = every
        self.clock = clock
        self._since = clock()  # versions of earlier runs: `weir maintain`'s (and the overlap)
        self._started: Optional[float] = None

    def poke(self, spark: SparkSession) -> None:
        """Compact now if the last compaction started ``every`` ago (or none has run)."""
        now = self.clock()
        if self._started is not None and now - self._started < self.every:
            return
        since = datetime.fromtimestamp(self._since, timezone.utc) - SPEED_COMPACT_OVERLAP
        self._started = self._since = now
        started = time.monotonic()
        try:
            deleted = compact_speed(spark, self.path, since)
        except Exception as error:  # the stream goes on; the next compaction tries again
            log.warning("speed compaction failed (the next one tries again): %s", error)
            return
        log.info(
            "speed compaction: %d superseded window versions deleted in %.2fs",
            deleted,
            time.monotonic() - started,
        )


class SpeedAppender:
    """``foreachBatch`` function of the speed layer: append the changed windows to SPEED.

    No MERGE on the hot path: finding the rows to replace was half of a MERGE's time and
    writing them the other half (docs/streaming.md, "SPEED: update mode and appended window
    versions").
    """

    def __init__(
        self,
        speed_path: str,
        writer: str = "speed",
        compactor: Optional[SpeedCompactor] = None,
        before_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.speed_path = speed_path
        self.writer = writer
        self.compactor = compactor
        self.before_commit = before_commit  # raises if this writer's fence was taken over

    def __call__(self, minutes: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        crash_point(SPEED_BEFORE_WRITE)
        self.before_commit()
        # A blind append reads nothing, so only a concurrent metadata change conflicts with
        # it (not `weir maintain`'s compaction or OPTIMIZE); appending the same versions again
        # is safe.
        retry_conflicts(
            partial(append_versions, minutes, self.speed_path, self.writer, batch_id),
            attempts=SPEED_WRITE_ATTEMPTS,
            what=f"speed batch {batch_id}: append to {self.speed_path}",
            hint="another writer keeps changing SPEED's metadata",
        )
        log.info(
            "speed batch %d: window versions appended in %.2fs",
            batch_id,
            time.monotonic() - started,
        )
        if self.compactor is not None:
            self.compactor.poke(minutes.sparkSession)
