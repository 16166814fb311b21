"""`weir stream`: the raw archiver and the speed layer of one source, in one driver process.

The archiver and the speed layer are two consumers of the source, so a record reaches SPEED one
speed micro-batch after it arrives, not after an archiver commit and a second trigger (the
queries: :mod:`weir.layers.streaming.queries`; Kinesis: :mod:`weir.layers.streaming.kinesis`).

``run_stream`` validates, runs the checkpoint guard (:mod:`weir.layers.streaming.checkpoints`),
creates the tables and starts the queries. With ``available_now`` both drain what the source
holds and stop; otherwise both run until ``stop`` is set (SIGTERM /
SIGINT through :func:`weir.entry.run_until_stopped`), in which case each query is stopped once
its current micro-batch is done. A failed query stops the other; a WeirError says why. See
docs/streaming.md.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Callable, Optional

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from weir import crashpoints
from weir.config import ConfigError, WeirConfig
from weir.control.fences import hold_fence
from weir.errors import WeirError
from weir.lake import LakeLayout
from weir.layers.streaming.checkpoints import (
    check_speed_checkpoint_reads_source,
    guard_checkpoint,
)
from weir.layers.streaming.kinesis import run_kinesis_stream
from weir.layers.streaming.progress import ProgressRecorder
from weir.layers.streaming.queries import (
    StreamResult,
    await_poll,
    ensure_stream_tables,
    raise_if_failed,
    raw_query_name,
    speed_query_name,
    start_raw_archiver,
    start_speed_layer,
    stop_gracefully,
)
from weir.sources import KAFKA, KINESIS, check_source

log = logging.getLogger("weir.stream")


def run_stream(
    spark: SparkSession,
    config: WeirConfig,
    source: str,
    available_now: bool = False,
    reset_checkpoint: bool = False,
    stop: Optional[threading.Event] = None,
) -> StreamResult:
    """Run the raw archiver and the speed layer of ``source`` (kafka | files | kinesis).

    Exactly once: RAW and QUARANTINE through marked appends checked once per run, SPEED
    through an idempotent MERGE, both behind checkpoints. Returns when both queries finished
    (``available_now``) or after ``stop`` was set; raises WeirError when a query fails or the
    checkpoint guard refuses, ConfigError for a bad source or configuration (nothing written).
    """
    started = time.monotonic()
    check_source(config, source)
    if source == KINESIS:
        return run_kinesis_stream(spark, config, available_now, reset_checkpoint, stop)
    lake = LakeLayout.from_config(config)
    stop = stop or threading.Event()
    # One `weir stream` per source and checkpoint: a second is refused (FenceHeldError, nothing
    # written); one whose fence was taken over (it looked dead) stops as on a signal, then fails.
    with hold_fence(config, lake.writer_fences, stream_fence(source), on_lost=stop.set) as fence:
        try:
            result = _run_fenced(
                spark, config, source, available_now, reset_checkpoint, stop, fence.ensure_held
            )
        except KeyboardInterrupt:
            # A second signal stops now, inside the running micro-batch (replayed at the next
            # start, its committed writes skipped): no query may write once the fence is
            # released, and py4j's callback threads would keep this process alive while the
            # JVM runs (the JVM ends only when this process does).
            _end_driver_jvm(spark)
            crashpoints.release_holds()
            raise
        except WeirError:
            fence.raise_if_lost()  # a writer taken over says so, not only its query's traceback
            raise
        fence.raise_if_lost()
    result.seconds = time.monotonic() - started
    return result


def stream_fence(source: str) -> str:
    """The writer fence of `weir stream --source <source>` (weir.control.fences)."""
    return f"stream-{source}"


def _run_fenced(
    spark: SparkSession,
    config: WeirConfig,
    source: str,
    available_now: bool,
    reset_checkpoint: bool,
    stop: threading.Event,
    fence_held: Callable[[], None],
) -> StreamResult:
    lake = LakeLayout.from_config(config)
    raw_name, speed_name = raw_query_name(source), speed_query_name(source)
    writers = guard_checkpoint(
        spark, raw_name, lake.checkpoint(raw_name), (lake.raw, lake.quarantine), reset_checkpoint
    )
    check_speed_checkpoint_reads_source(spark, speed_name, lake.checkpoint(speed_name))
    ensure_stream_tables(spark, lake)
    result = StreamResult(source=source)
    recorder = ProgressRecorder((raw_name, speed_name))
    spark.streams.addListener(recorder)
    queries: list[StreamingQuery] = []

    def start_raw() -> StreamingQuery:
        return start_raw_archiver(spark, config, source, writers, available_now, fence_held)

    def start_speed() -> StreamingQuery:
        return start_speed_layer(spark, config, source, available_now, before_commit=fence_held)

    # Both queries read the source: draining or not, they run side by side.
    stages: list[list[Callable[[], StreamingQuery]]] = [[start_raw, start_speed]]
    interrupted = False
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
            try:
                result.progress_rows += _follow(spark, lake, started_now, recorder, stop)
            except WeirError as failure:
                if source == KAFKA:
                    lost = kafka_data_loss(config, started_now)
                    if lost is not None:
                        raise lost from failure
                raise
            if stop.is_set():
                result.stopped_by_signal = True
                break
    except KeyboardInterrupt:
        interrupted = True  # a second signal: no waiting for a micro-batch (run_stream)
        raise
    finally:
        if not interrupted:
            _stop_and_record(spark, lake, queries, recorder, result)
    return result


def _stop_and_record(
    spark: SparkSession,
    lake: LakeLayout,
    queries: list[StreamingQuery],
    recorder: ProgressRecorder,
    result: StreamResult,
) -> None:
    """Stop the queries after their running micro-batches and record their last progress."""
    stop_gracefully([query for query in queries if query.isActive])
    recorder.wait_for_termination([query.id for query in queries], timeout=10.0)
    result.progress_rows += recorder.flush(spark, lake.stream_progress)
    spark.streams.removeListener(recorder)
    for query in queries:
        progress = query.lastProgress
        result.last_batch[query.name] = None if progress is None else progress["batchId"]


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
    while True:
        raise_if_failed(queries)
        active = [query for query in queries if query.isActive]
        if not active or stop.is_set():
            return recorded
        await_poll(active[0])
        recorded += recorder.flush_if_due(spark, lake.stream_progress)


# What Spark 3.5's Kafka source says when offsets the checkpoint expects are gone (its message
# then goes on about failOnDataLoss): one pattern per way of losing records, each naming the
# topic-partition and the offsets involved.
_CANNOT_FETCH = re.compile(r"Cannot fetch offset (\d+) \(GroupId: [^,]*, TopicPartition: (\S+?)\)")
_OFFSET_CHANGED = re.compile(r"Partition (\S+?)'s offset was changed from (\d+) to (\d+)")
_PARTITIONS_GONE = re.compile(r"(Set\([^)]*\)) are gone")

KAFKA_DATA_LOSS_ACTION = (
    "nothing was written for them. If they are gone for good (retention), run once with "
    "WEIR__SOURCES__KAFKA__FAIL_ON_DATA_LOSS=false to continue from the earliest offset Kafka "
    "still has (Spark logs what it skips), then leave it true; if the topic was deleted and "
    "recreated, delete the raw-kafka and speed-kafka checkpoints and run with "
    "--reset-checkpoint (docs/streaming.md, 'Data loss')"
)


def kafka_data_loss(config: WeirConfig, queries: list[StreamingQuery]) -> Optional[WeirError]:
    """The one-line WeirError naming the records Kafka lost under a failed query, or None when
    no query failed on lost records. The end of a lost range is Kafka's earliest offset now,
    asked of the broker (best effort: a broker that does not answer leaves it open)."""
    for query in queries:
        error = None if query.isActive else query.exception()
        if error is None or "failOnDataLoss" not in str(error):
            continue
        lost = describe_kafka_loss(str(error), lambda tp: _earliest_offset(config, tp))
        return WeirError(f"{query.name}: Kafka no longer holds {lost}; {KAFKA_DATA_LOSS_ACTION}")
    return None


def describe_kafka_loss(message: str, earliest: Callable[[str], Optional[int]]) -> str:
    """The records a Spark Kafka data-loss ``message`` says are gone, in words (pure but for
    ``earliest``: topic-partition -> the first offset Kafka holds now, None if unknown)."""
    fetch = _CANNOT_FETCH.search(message)
    if fetch:
        offset, partition = int(fetch.group(1)), fetch.group(2)
        first_held = earliest(partition)
        if first_held is not None and first_held > offset:
            return (
                f"{partition} offsets {offset} to {first_held - 1} "
                f"({first_held - offset} records; its earliest offset is now {first_held})"
            )
        return f"{partition} from offset {offset} on"
    changed = _OFFSET_CHANGED.search(message)
    if changed:
        partition, before, after = changed.group(1), changed.group(2), changed.group(3)
        return (
            f"{partition} from offset {before} on (its offsets went back to {after}: "
            "the topic was deleted and recreated)"
        )
    gone = _PARTITIONS_GONE.search(message)
    if gone:
        return f"the partitions {gone.group(1)} (deleted)"
    return "records its checkpoint expects (retention expired, or the topic was recreated)"


def _earliest_offset(config: WeirConfig, topic_partition: str) -> Optional[int]:
    """Kafka's earliest offset of ``topic-partition`` now; None when the broker does not say."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from weir.simulate.sinks import kafka_client_settings

    topic, _, partition = topic_partition.rpartition("-")
    try:
        consumer = Consumer({**kafka_client_settings(config), "group.id": "weir-data-loss-probe"})
    except (KafkaException, ValueError, ConfigError) as error:
        log.warning("could not ask Kafka for %s's earliest offset: %s", topic_partition, error)
        return None
    try:
        low, _ = consumer.get_watermark_offsets(TopicPartition(topic, int(partition)), timeout=5)
        return low
    except (KafkaException, ValueError) as error:
        log.warning("could not ask Kafka for %s's earliest offset: %s", topic_partition, error)
        return None
    finally:
        consumer.close()


def _end_driver_jvm(spark: SparkSession) -> None:
    """Kill the JVM this process started for ``spark`` (SIGKILL: its queries stop where they
    are, as in a crash). Under spark-submit the JVM is the parent, and ends with this process."""
    gateway = spark.sparkContext._gateway
    process = getattr(gateway, "proc", None) if gateway is not None else None
    if process is not None and process.poll() is None:
        log.warning("interrupted: ending the driver JVM (pid %d) now", process.pid)
        process.kill()
        process.wait(timeout=30)
