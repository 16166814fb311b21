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
import threading
import time
from typing import Callable, Optional

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from weir.config import WeirConfig
from weir.control.fences import hold_fence
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
from weir.sources import KINESIS, check_source

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
        result = _run_fenced(spark, config, source, available_now, reset_checkpoint, stop)
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
        return start_raw_archiver(spark, config, source, writers, available_now)

    def start_speed() -> StreamingQuery:
        return start_speed_layer(spark, config, source, available_now)

    # Both queries read the source: draining or not, they run side by side.
    stages: list[list[Callable[[], StreamingQuery]]] = [[start_raw, start_speed]]
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
    while True:
        raise_if_failed(queries)
        active = [query for query in queries if query.isActive]
        if not active or stop.is_set():
            return recorded
        await_poll(active[0])
        recorded += recorder.flush_if_due(spark, lake.stream_progress)
