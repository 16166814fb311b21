"""The streaming queries of `weir stream` and what starting, watching and stopping them shares.

* ``raw-<source>``: source -> RAW rows -> :class:`~weir.layers.streaming.archiver.RawArchiver`
  (RAW and QUARANTINE, Delta appends marked with the batch id, checked once per run);
* ``speed-<source>``: the same source, read by a second consumer -> contract -> watermark,
  dedup, per-minute windows in update mode -> :class:`~weir.layers.streaming.speed.SpeedAppender`
  (new window versions appended to SPEED).

The two queries are independent consumers of the source, as the speed and batch layers of a
Lambda architecture are: a record reaches SPEED after one micro-batch of the speed query,
whatever the archiver is doing (docs/streaming.md, "One hop"). So each has its own trigger
(the archiver's ``timing.archive_trigger_seconds``, by default the speed query's) and its own
scheduler pool (``weir.spark.SPEED_POOL`` / ``ARCHIVE_POOL``), which shares the task slots
fairly when ``spark.scheduler.mode`` is FAIR (opt-in; docs/streaming.md, "Two triggers, two
pools"). The Kafka and files sources run
both as Structured Streaming queries (:mod:`weir.layers.streaming.run`); the local Kinesis
reader is not a Spark source, so its speed query reads what the archiver committed to RAW
(:mod:`weir.layers.streaming.kinesis`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from weir.config import WeirConfig
from weir.delta import ensure_table
from weir.errors import WeirError
from weir.lake import LakeLayout
from weir.layers.streaming.archiver import RawArchiver, WriterIds
from weir.layers.streaming.speed import SpeedAppender, SpeedCompactor, speed_minutes
from weir.schemas import (
    MINUTE_PARTITION_COLUMNS,
    MINUTE_SCHEMA,
    QUARANTINE_PARTITION_COLUMNS,
    QUARANTINE_SCHEMA,
    RAW_PARTITION_COLUMNS,
    RAW_SCHEMA,
    SPEED_TABLE_PROPERTIES,
    STREAM_PROGRESS_PARTITION_COLUMNS,
    STREAM_PROGRESS_SCHEMA,
)
from weir.sources import archive_source, source_records
from weir.spark import ARCHIVE_POOL, SPEED_POOL, scheduler_pool

log = logging.getLogger("weir.stream")

POLL_SECONDS = 1.0
# How long a stop waits for a running micro-batch before interrupting it (which is safe: the
# batch is replayed at the next start, its committed writes skipped).
GRACEFUL_STOP_SECONDS = 120.0


def raw_query_name(source: str) -> str:
    return f"raw-{source}"


def speed_query_name(source: str) -> str:
    return f"speed-{source}"


def ensure_stream_tables(spark: SparkSession, lake: LakeLayout) -> None:
    """RAW, QUARANTINE, SPEED and the progress table exist, so writers and readers find them.

    Created side by side: each creation is a small job and a Delta commit, mostly waiting on
    the driver.
    """
    tables = [
        (lake.raw, RAW_SCHEMA, RAW_PARTITION_COLUMNS, {}),
        (lake.quarantine, QUARANTINE_SCHEMA, QUARANTINE_PARTITION_COLUMNS, {}),
        (lake.speed, MINUTE_SCHEMA, MINUTE_PARTITION_COLUMNS, SPEED_TABLE_PROPERTIES),
        (lake.stream_progress, STREAM_PROGRESS_SCHEMA, STREAM_PROGRESS_PARTITION_COLUMNS, {}),
    ]
    with ThreadPoolExecutor(max_workers=len(tables), thread_name_prefix="weir-create") as pool:
        for created in [pool.submit(ensure_table, spark, *table) for table in tables]:
            created.result()


def _trigger(seconds: int, available_now: bool) -> dict:
    if available_now:
        return {"availableNow": True}
    return {"processingTime": f"{seconds} seconds"}


def start_raw_archiver(
    spark: SparkSession,
    config: WeirConfig,
    source: str,
    writers: WriterIds,
    available_now: bool,
    before_commit: Callable[[], None] = lambda: None,
) -> StreamingQuery:
    """``raw-<source>``: the source's records -> RAW and QUARANTINE, exactly once.

    ``before_commit`` runs before each micro-batch's appends and raises if the writer may no
    longer commit (``FenceKeeper.ensure_held``)."""
    lake = LakeLayout.from_config(config)
    name = raw_query_name(source)
    stream, raw_rows = archive_source(spark, config, source)
    writer = (
        stream.writeStream.queryName(name)
        .foreachBatch(RawArchiver(lake, writers, name, raw_rows, before_commit))
        .option("checkpointLocation", lake.checkpoint(name))
        .trigger(**_trigger(config.timing.archive_trigger, available_now))
    )
    with scheduler_pool(spark, ARCHIVE_POOL):
        return writer.start()


def start_speed_layer(
    spark: SparkSession,
    config: WeirConfig,
    source: str,
    available_now: bool,
    records: Optional[DataFrame] = None,
    before_commit: Callable[[], None] = lambda: None,
) -> StreamingQuery:
    """``speed-<source>``: the source's records -> speed_minutes -> appended to SPEED, whose
    superseded versions the query deletes itself between appends (``SpeedCompactor``).

    ``records``: the streaming RAW rows to read instead of the source itself (the local
    Kinesis reader's RAW rows). ``before_commit``: as for :func:`start_raw_archiver`.
    """
    lake = LakeLayout.from_config(config)
    name = speed_query_name(source)
    if records is None:
        records = source_records(spark, config, source)
    minutes = speed_minutes(records, config.timing.allowed_lateness_minutes)
    writer = (
        minutes.writeStream.queryName(name)
        .outputMode("update")
        .foreachBatch(SpeedAppender(lake.speed, name, SpeedCompactor(lake.speed), before_commit))
        .option("checkpointLocation", lake.checkpoint(name))
        .trigger(**_trigger(config.timing.trigger_interval_seconds, available_now))
    )
    with scheduler_pool(spark, SPEED_POOL):
        return writer.start()


@dataclass
class StreamResult:
    """What a `weir stream` run did."""

    source: str
    last_batch: dict[str, Optional[int]] = field(default_factory=dict)
    stopped_by_signal: bool = False
    progress_rows: int = 0
    seconds: float = 0.0


def error_summary(message: str) -> str:
    """The line of a streaming query's error that says what went wrong.

    Spark appends the query's plan after ``=== Streaming Query ===``; an error raised in a
    foreachBatch function arrives as a Python traceback, whose last line is the exception.
    """
    head = message.split("=== Streaming Query ===")[0]
    lines = [line.strip() for line in head.splitlines() if line.strip()]
    if not lines:
        return message.strip()
    return lines[-1] if "Traceback (most recent call last)" in head else lines[0]


def query_failure(query: StreamingQuery) -> Optional[WeirError]:
    """The WeirError saying why ``query`` failed; None while it runs or after a clean stop."""
    error = None if query.isActive else query.exception()
    if error is None:
        return None
    message = str(error)
    log.error("query %s failed:\n%s", query.name, message)
    summary = error_summary(message)
    if "failOnDataLoss" in message:
        return WeirError(
            f"{query.name}: Kafka no longer holds records this query's checkpoint expects "
            "(retention expired, or the topic was deleted and recreated); nothing was written "
            "for them. To proceed: if those records are gone for good, run once with "
            "WEIR__SOURCES__KAFKA__FAIL_ON_DATA_LOSS=false to continue from the earliest "
            "offsets Kafka still has (the gap is logged), then leave it true; if the topic "
            "was recreated, delete the raw-kafka and speed-kafka checkpoints and run with "
            f"--reset-checkpoint. Spark said: {summary}"
        )
    return WeirError(f"{query.name} failed: {summary} (full error in the log)")


def raise_if_failed(queries: list[StreamingQuery]) -> None:
    """Raise the WeirError of the first query that failed, if any."""
    for query in queries:
        failure = query_failure(query)
        if failure is not None:
            raise failure


def await_poll(query: StreamingQuery, seconds: float = POLL_SECONDS) -> None:
    """Wait up to ``seconds`` for ``query`` to end; a failure is reported by the caller's
    next :func:`raise_if_failed`, not raised here."""
    with contextlib.suppress(StreamingQueryException):
        query.awaitTermination(seconds)


def stop_gracefully(queries: list[StreamingQuery], timeout: float = GRACEFUL_STOP_SECONDS) -> None:
    """Stop each query once its running micro-batch (if any) is done, or at the deadline."""
    deadline = time.monotonic() + timeout
    for query in queries:
        while query.isActive and query.status["isTriggerActive"] and time.monotonic() < deadline:
            try:
                query.awaitTermination(0.2)
            except StreamingQueryException:
                break
        if query.isActive:
            query.stop()
