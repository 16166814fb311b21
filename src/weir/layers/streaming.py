"""`weir stream`: the raw archiver and the speed layer of one source, in one driver process.

Two streaming queries share the one SparkSession, each with its own checkpoint:

* ``raw-<source>``: source -> RAW rows -> ``RawArchiver`` (RAW and QUARANTINE, idempotent
  Delta appends keyed by batch id);
* ``speed-<source>``: RAW (the Delta table as a streaming source, this source's rows) ->
  contract -> watermark, dedup, per-minute windows in update mode -> ``SpeedUpserter``
  (MERGE into SPEED).

The source is read once: the speed layer reads what the archiver committed. That halves the
reads of Kafka and gives the speed layer the very ingest times the quarantine was judged by;
every source (Kafka, files, Kinesis) feeds the speed layer the same way.

``run_stream`` validates, runs the checkpoint guard (``weir.layers.checkpoints``), creates
the tables and starts the queries. With ``available_now`` it drains the source into RAW, then
brings SPEED up to what RAW holds; otherwise both run until ``stop`` is set (SIGTERM /
SIGINT through ``stop_on_signals``), in which case each query is stopped once its current
micro-batch is done. A failed query stops the other; a WeirError says why. See
docs/streaming.md.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

from pyspark.errors import StreamingQueryException
from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import StructType

from weir.config import WeirConfig
from weir.errors import WeirError
from weir.lake import LakeLayout
from weir.layers.checkpoints import QueryWriters, guard_checkpoint, latest_table_version
from weir.layers.progress import ProgressRecorder
from weir.layers.raw import RawArchiver
from weir.layers.speed import SpeedUpserter, raw_stream, speed_minutes
from weir.schemas import (
    MINUTE_PARTITION_COLUMNS,
    MINUTE_SCHEMA,
    QUARANTINE_PARTITION_COLUMNS,
    QUARANTINE_SCHEMA,
    RAW_PARTITION_COLUMNS,
    RAW_SCHEMA,
    STREAM_PROGRESS_PARTITION_COLUMNS,
    STREAM_PROGRESS_SCHEMA,
)
from weir.sources import KINESIS, check_source, source_records, source_stream

log = logging.getLogger("weir.stream")

PROGRESS_FLUSH_SECONDS = 10.0
POLL_SECONDS = 1.0
# How long a stop waits for a running micro-batch before interrupting it (which is safe: the
# batch is replayed at the next start, its committed writes skipped).
GRACEFUL_STOP_SECONDS = 120.0


def raw_query_name(source: str) -> str:
    return f"raw-{source}"


def speed_query_name(source: str) -> str:
    return f"speed-{source}"


def ensure_table(
    spark: SparkSession, path: str, schema: StructType, partition_columns: tuple[str, ...]
) -> None:
    """Create an empty Delta table at ``path`` unless one exists (schema and partitioning).

    Path-based on purpose: ``DeltaTable.createIfNotExists`` resolves ``delta.`path``` through
    the session catalog, which locally boots the embedded Derby metastore and holds it for the
    life of the stream, so `weir catalog sync` or a notebook could not open it meanwhile.
    Delta records a DataFrame write's columns as nullable; the contract keeps the required
    ones filled. ``ignore`` makes a concurrent creator's table win.
    """
    if latest_table_version(spark, path) is not None:
        return
    (
        spark.createDataFrame([], schema)
        .write.format("delta")
        .mode("ignore")
        .partitionBy(*partition_columns)
        .save(path)
    )


def ensure_stream_tables(spark: SparkSession, lake: LakeLayout) -> None:
    """RAW, QUARANTINE, SPEED and the progress table exist, so writers and readers find them.

    Created side by side: each creation is a small job and a Delta commit, mostly waiting on
    the driver (about 2 s each on 2 cores, one after another).
    """
    tables = [
        (lake.raw, RAW_SCHEMA, RAW_PARTITION_COLUMNS),
        (lake.quarantine, QUARANTINE_SCHEMA, QUARANTINE_PARTITION_COLUMNS),
        (lake.speed, MINUTE_SCHEMA, MINUTE_PARTITION_COLUMNS),
        (lake.stream_progress, STREAM_PROGRESS_SCHEMA, STREAM_PROGRESS_PARTITION_COLUMNS),
    ]
    with ThreadPoolExecutor(max_workers=len(tables), thread_name_prefix="weir-create") as pool:
        for created in [pool.submit(ensure_table, spark, *table) for table in tables]:
            created.result()


def _trigger(config: WeirConfig, available_now: bool) -> dict:
    if available_now:
        return {"availableNow": True}
    return {"processingTime": f"{config.timing.trigger_interval_seconds} seconds"}


def start_raw_archiver(
    spark: SparkSession,
    config: WeirConfig,
    source: str,
    writers: QueryWriters,
    available_now: bool,
) -> StreamingQuery:
    lake = LakeLayout.from_config(config)
    name = raw_query_name(source)
    return (
        source_records(spark, config, source)
        .writeStream.queryName(name)
        .foreachBatch(RawArchiver(lake, writers, name))
        .option("checkpointLocation", lake.checkpoint(name))
        .trigger(**_trigger(config, available_now))
        .start()
    )


def start_speed_layer(
    spark: SparkSession, config: WeirConfig, source: str, available_now: bool
) -> StreamingQuery:
    """``speed-<source>``: this source's RAW rows -> speed_minutes -> MERGE into SPEED."""
    lake = LakeLayout.from_config(config)
    name = speed_query_name(source)
    records = raw_stream(spark, lake.raw, source, source_stream(config, source))
    minutes = speed_minutes(records, config.timing.allowed_lateness_minutes)
    return (
        minutes.writeStream.queryName(name)
        .outputMode("update")
        .foreachBatch(SpeedUpserter(lake.speed))
        .option("checkpointLocation", lake.checkpoint(name))
        .trigger(**_trigger(config, available_now))
        .start()
    )


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


def _failure(query: StreamingQuery, error: StreamingQueryException) -> WeirError:
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


def run_stream(
    spark: SparkSession,
    config: WeirConfig,
    source: str,
    available_now: bool = False,
    reset_checkpoint: bool = False,
    stop: Optional[threading.Event] = None,
) -> StreamResult:
    """Run the raw archiver and the speed layer of ``source`` (kafka | files | kinesis).

    Exactly once: RAW and QUARANTINE through idempotent appends, SPEED through an idempotent
    MERGE, both behind checkpoints. Returns when both queries finished (``available_now``)
    or after ``stop`` was set; raises WeirError when a query fails or the checkpoint guard
    refuses, ConfigError for a bad source or configuration (nothing written).
    """
    started = time.monotonic()
    check_source(config, source)
    if source == KINESIS:
        # Its own driver-side archiver (docs/kinesis.md); imported here: it builds on this module.
        from weir.layers.kinesis_stream import run_kinesis_stream

        return run_kinesis_stream(spark, config, available_now, reset_checkpoint, stop)
    lake = LakeLayout.from_config(config)
    raw_name, speed_name = raw_query_name(source), speed_query_name(source)
    writers = guard_checkpoint(
        spark, raw_name, lake.checkpoint(raw_name), (lake.raw, lake.quarantine), reset_checkpoint
    )
    ensure_stream_tables(spark, lake)
    stop = stop or threading.Event()
    result = StreamResult(source=source)
    recorder = ProgressRecorder((raw_name, speed_name))
    spark.streams.addListener(recorder)
    queries: list[StreamingQuery] = []

    def start_raw() -> StreamingQuery:
        return start_raw_archiver(spark, config, source, writers, available_now)

    def start_speed() -> StreamingQuery:
        return start_speed_layer(spark, config, source, available_now)

    # Draining: the speed layer's available-now run sees RAW as it is when it starts, so it
    # starts once the archiver has drained the source.
    stages = [[start_raw], [start_speed]] if available_now else [[start_raw, start_speed]]
    try:
        log.info(
            "streaming %s: %s (writer epoch %d) and %s%s",
            source,
            raw_name,
            writers.epoch,
            speed_name,
            ", until the available data is processed" if available_now else "",
        )
        for stage in stages:
            started_now = [start() for start in stage]
            queries.extend(started_now)
            result.progress_rows += _follow(spark, lake, started_now, recorder, stop)
            if stop.is_set():
                result.stopped_by_signal = True
                break
    finally:
        stop_gracefully([query for query in queries if query.isActive])
        recorder.wait_for_termination([query.id for query in queries], timeout=10.0)
        result.progress_rows += recorder.flush(spark, lake.stream_progress)
        spark.streams.removeListener(recorder)
        for query in queries:
            progress = query.lastProgress
            result.last_batch[query.name] = None if progress is None else progress["batchId"]
    result.seconds = time.monotonic() - started
    return result


def _follow(
    spark: SparkSession,
    lake: LakeLayout,
    queries: list[StreamingQuery],
    recorder: ProgressRecorder,
    stop: threading.Event,
) -> int:
    """Until every query finished or ``stop`` is set, flushing progress on the way; raises
    the WeirError of the first query that failed. Returns the progress rows recorded."""
    recorded = 0
    next_flush = time.monotonic() + PROGRESS_FLUSH_SECONDS
    while True:
        for query in queries:
            error = None if query.isActive else query.exception()
            if error is not None:
                raise _failure(query, error)
        active = [query for query in queries if query.isActive]
        if not active or stop.is_set():
            return recorded
        try:
            active[0].awaitTermination(POLL_SECONDS)
        except StreamingQueryException:
            continue  # reported at the top of the loop
        if time.monotonic() >= next_flush:
            recorded += recorder.flush(spark, lake.stream_progress)
            next_flush = time.monotonic() + PROGRESS_FLUSH_SECONDS
