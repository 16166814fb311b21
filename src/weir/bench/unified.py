"""Benchmark of the unified table's freshness: produce → visible in ``telemetry_minute``.

The whole live path runs at once in one driver, on a private broker (weir.infra.private_stack)
and a fresh topic: ``run_stream`` (raw archiver + speed layer, the configured processing-time
trigger) in a thread, the merge loop (``follow_merges`` at ``timing.merge_interval_seconds``,
60 s by default; override with ``WEIR__TIMING__MERGE_INTERVAL_SECONDS``) in another, on a
session of its own (the merge sets a session-wide commit-metadata conf while it commits), and
the simulator producing :data:`RATE` events/s into the topic for one warm-up interval plus
:data:`MEASURED_MERGES` intervals. Production starts once both streaming queries have run a
first micro-batch. When it ends, stream and merges keep running until the unified table
counts every record produced (or :data:`DRAIN_INTERVALS` intervals + 60 s have passed), then
stop.

**Rate.** 1,000 events/s from 1,000 devices reporting every second: 1,000 device-minutes per
minute, a realistic small fleet. The streaming suite shows the stream falling behind at 5,000/s
on this 2-core machine; at 1,000/s it keeps up, so the figure measures the serving path (merge
interval + merge time + the stream's own delay), not a growing backlog. No faults
(``--fault-mix none``): late, duplicate and invalid records reach the unified table through
the batch layer or never, by design (docs/contract.md, "The serving rule"), and would count as
"never visible" here.

**Visibility**, independent of the stream's internals. A record is *visible* once a committed
version of the unified table (read by path, as any reader would) shows its window
(device_id, window_start) with an ``event_count`` at least the record's *rank*: its position,
in produce order, among its window's valid, first-received events (ties by event_id). So the
k-th event produced in a window is visible when the window first counts k events. Such a
version's instant is when its commit file appeared in ``_delta_log`` (its modification time:
the moment a reader can see it). The versions are read after the run with ``versionAsOf``: a
reader polling the latest version every second would see exactly these versions, up to a
second later; reading them afterwards gives the exact instants and costs the measured system
nothing while it runs. A record's *produce time* is its Kafka timestamp (the producer's send
time, RAW's ``arrival_time``); the records and their windows come from a batch read of the
topic through the contract (``classify_records``, ``valid_events``, ``dedup_first_received``).
Its latency is visible − produced. A record never visible by the end is counted as visible at
the end of the run (so it pushes the percentiles up, never out: they become lower bounds) and
reported as ``never_visible``, which fails the run.

Measured: records produced after the warm-up interval (the first merges and micro-batches pay
for JIT and start-up). Target: p99 ≤ merge interval + 30 s (issue #6). The same measure on
the SPEED table's versions (``speed_only`` in the figures) splits the delay between the stream
(produce → SPEED) and the merge loop (SPEED → unified).
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from weir.bench.harness import (
    Measurement,
    SuiteResult,
    environment,
    kafka_bench_config,
    load_average,
    new_topic,
    simulate_in_own_process,
)
from weir.config import WeirConfig
from weir.errors import WeirError
from weir.lake import LakeLayout, local_path

SUITE = "unified"
PRODUCED = "produced"
RATE = 1000  # events/s
DEVICES = 1000  # each reports once a second at RATE
MEASURED_MERGES = 5  # merge intervals of production after the warm-up interval
SLACK_SECONDS = 30  # the target: p99 <= merge interval + SLACK_SECONDS
DRAIN_INTERVALS = 2  # after production: wait at most this many intervals + 60 s
STREAM_START_TIMEOUT_S = 300
QUANTILES = (0.5, 0.95, 0.99)
_KEY = ("device_id", "window_start")


# --- The arithmetic (pure DataFrame / Python; tests/test_bench_unified.py) --------------------


def record_visibility(records: DataFrame, counts: DataFrame) -> DataFrame:
    """Per record: its rank in its window and when the unified table first counted that many.

    ``records``: device_id, window_start, event_id, sent_at (epoch seconds) — one row per
    valid, first-received event. ``counts``: device_id, window_start, event_count, visible_at
    (epoch seconds) — one row per window per committed version of the unified table.
    Output: the record columns, ``rank`` (1 = produced first in its window), ``visible_at``
    (null: never) and ``latency_s`` = visible_at − sent_at (null: never).
    """
    in_produce_order = Window.partitionBy(*_KEY).orderBy("sent_at", "event_id")
    ranked = records.select(
        *_KEY, "event_id", "sent_at", F.row_number().over(in_produce_order).alias("rank")
    )
    reached = counts.groupBy(*_KEY, "event_count").agg(F.min("visible_at").alias("reached_at"))
    matched = ranked.join(
        reached,
        (ranked["device_id"] == reached["device_id"])
        & (ranked["window_start"] == reached["window_start"])
        & (reached["event_count"] >= ranked["rank"]),
        "left",
    )
    visible = matched.groupBy(*(ranked[c] for c in (*_KEY, "event_id", "sent_at", "rank"))).agg(
        F.min("reached_at").alias("visible_at")
    )
    return visible.withColumn("latency_s", F.col("visible_at") - F.col("sent_at"))


def latency_summary(rows: list[tuple[float, Optional[float]]], ended_at: float) -> dict:
    """records, visible, never_visible, p50/p95/p99 and max latency (s; nearest rank).

    ``rows``: (sent_at, visible_at) per record, visible_at None for a record never visible.
    Such a record counts as visible at ``ended_at`` (the end of the run), so it pushes the
    percentiles up rather than out; with any of them, every figure is a lower bound
    (``lower_bound`` true) and the run fails its check on ``never_visible`` anyway.
    """
    latencies = sorted(
        (ended_at if visible_at is None else visible_at) - sent_at for sent_at, visible_at in rows
    )
    never = sum(1 for _, visible_at in rows if visible_at is None)
    summary: dict = {"records": len(rows), "visible": len(rows) - never, "never_visible": never}
    for q in QUANTILES:
        index = max(math.ceil(q * len(latencies)), 1) - 1
        summary[f"p{round(q * 100)}_s"] = round(latencies[index], 3) if latencies else None
    summary["max_s"] = round(latencies[-1], 3) if latencies else None
    summary["lower_bound"] = never > 0
    return summary


# --- The inputs of the arithmetic, read after the run -------------------------------------------


def produced_records(spark: SparkSession, config: WeirConfig) -> DataFrame:
    """The topic's valid, first-received events: device_id, window_start, event_id, sent_at.

    A batch read of the whole topic; the Kafka timestamp stands in for ingest_time, so the
    first-received copy is the first one produced.
    """
    from weir.contract import classify_records, dedup_first_received, valid_events
    from weir.sources.kafka import kafka_records, whole_topic

    messages = whole_topic(spark, config.sources.kafka)
    raw = kafka_records(messages).withColumn("ingest_time", F.col("arrival_time"))
    events = dedup_first_received(valid_events(classify_records(raw)))
    return events.select(
        "device_id",
        F.window("event_time", "1 minute").start.alias("window_start"),
        "event_id",
        F.col("ingest_time").cast("double").alias("sent_at"),
    )


def commit_instants(table_path: str) -> dict[int, float]:
    """Version -> epoch seconds its commit file appeared (local lake: the file's mtime)."""
    log_dir = Path(local_path(table_path)) / "_delta_log"
    instants = {}
    for entry in log_dir.glob("*.json"):
        if entry.stem.isdigit():
            instants[int(entry.stem)] = entry.stat().st_mtime
    return instants


def version_counts(spark: SparkSession, table_path: str) -> DataFrame:
    """device_id, window_start, event_count, visible_at for every version of a minute table."""
    frames = [
        spark.read.format("delta")
        .option("versionAsOf", version)
        .load(table_path)
        .select(*_KEY, "event_count", F.lit(instant).cast("double").alias("visible_at"))
        for version, instant in sorted(commit_instants(table_path).items())
    ]
    if not frames:
        raise WeirError(f"no committed version of {table_path}")
    combined = frames[0]
    for frame in frames[1:]:
        combined = combined.unionByName(frame)
    return combined


def _counted(spark: SparkSession, table_path: str) -> int:
    from weir.delta import table_version

    if table_version(spark, table_path) is None:
        return 0
    total = spark.read.format("delta").load(table_path).agg(F.sum("event_count")).first()[0]
    return int(total or 0)


# --- The run -------------------------------------------------------------------------------------


def _wait_for_stream(
    spark: SparkSession, failure: list, stop: threading.Event, deadline: float
) -> None:
    """Until both streaming queries are active and have each finished a micro-batch."""
    while not stop.is_set():
        queries = spark.streams.active
        if len(queries) >= 2 and all(query.lastProgress is not None for query in queries):
            return
        if failure or time.monotonic() > deadline:
            raise WeirError(f"the stream did not start: {failure or 'deadline passed'}")
        stop.wait(1.0)


def measure(
    spark: SparkSession,
    config: WeirConfig,
    interval_s: float,
    rate: int = RATE,
    merges: int = MEASURED_MERGES,
) -> dict:
    """Run stream, merge loop and simulator together; return the figures (module doc)."""
    from weir.layers.streaming import run_stream
    from weir.serving import follow_merges
    from weir.simulate.faults import FaultMix
    from weir.simulate.run import SimulateOptions

    lake = LakeLayout.from_config(config)
    stop_stream, stop_merges, merged = threading.Event(), threading.Event(), threading.Event()
    failure: list[BaseException] = []
    merge_log: list[dict] = []

    def stream() -> None:
        try:
            run_stream(spark, config, "kafka", available_now=False, stop=stop_stream)
        except BaseException as error:  # reported by the caller
            failure.append(error)

    def on_merge(run: object, seconds: float) -> None:
        merge_log.append(
            {
                "started_at": time.time() - seconds,
                "seconds": round(seconds, 2),
                "scope": run.scope,
                "rows_written": run.rows_written,
                "serving_version": run.serving_version,
            }
        )
        merged.set()

    def merge_loop() -> None:
        try:
            follow_merges(merge_session, config, interval_s, stop_merges, on_merge=on_merge)
        except BaseException as error:
            failure.append(error)
        finally:
            merged.set()

    merge_session = spark.newSession()
    stream_thread = threading.Thread(target=stream, name="bench-stream", daemon=True)
    merge_thread = threading.Thread(target=merge_loop, name="bench-merge", daemon=True)
    warmup_s = interval_s
    produce_s = warmup_s + merges * interval_s
    load_before = load_average()
    stream_thread.start()
    try:
        _wait_for_stream(spark, failure, stop_stream, time.monotonic() + STREAM_START_TIMEOUT_S)
        merge_thread.start()
        sent = simulate_in_own_process(
            config,
            SimulateOptions(
                devices=DEVICES,
                rate=rate,
                duration_s=produce_s,
                sink="kafka",
                seed=6,
                faults=FaultMix.preset("none"),
            ),
        )
        if sent.status != "completed":
            raise WeirError(f"simulator run {sent.run_id} ended {sent.status}")
        produce_ended = time.time()
        deadline = time.monotonic() + DRAIN_INTERVALS * interval_s + 60
        counted = 0
        while not failure and time.monotonic() < deadline:
            merged.wait(max(0.0, deadline - time.monotonic()))
            merged.clear()
            counted = _counted(spark, lake.serving)
            if counted >= sent.acknowledged:
                break
        drained_s = time.time() - produce_ended
    finally:
        stop_merges.set()
        if merge_thread.ident is not None:
            merge_thread.join(timeout=600)
        stop_stream.set()
        stream_thread.join(timeout=300)
    if failure:
        raise WeirError(f"the stream or the merge loop failed: {failure[0]}") from failure[0]
    load_after = load_average()

    ended_at = time.time()
    records = produced_records(spark, config).cache()
    measured_from = records.agg(F.min("sent_at")).first()[0] + warmup_s

    def latencies_in(table_path: str) -> dict:
        visibility = record_visibility(records, version_counts(spark, table_path))
        rows = [
            (row["sent_at"], row["visible_at"])
            for row in visibility.where(F.col("sent_at") >= measured_from)
            .select("sent_at", "visible_at")
            .collect()
        ]
        return latency_summary(rows, ended_at)

    summary = latencies_in(lake.serving)
    # The same measure on SPEED: how much of the delay is the stream's, how much the merge's.
    speed = latencies_in(lake.speed)
    records.unpersist()
    in_window = [m for m in merge_log if m["started_at"] >= measured_from]
    return {
        **summary,
        "rate_target": rate,
        "devices": DEVICES,
        "produced": sent.acknowledged,
        "produce_seconds": round(sent.seconds, 1),
        "rate_achieved": round(sent.acknowledged / sent.seconds, 1) if sent.seconds else None,
        "merge_interval_s": interval_s,
        "trigger_interval_s": config.timing.trigger_interval_seconds,
        "warmup_s": warmup_s,
        "merges_planned_after_warmup": merges,
        "merges_total": len(merge_log),
        "merges_after_warmup": len(in_window),
        "merge_seconds_after_warmup": [m["seconds"] for m in in_window],
        "counted_at_end": counted,
        "drain_seconds": round(drained_s, 1),
        "speed_only": {k: speed[k] for k in ("p50_s", "p95_s", "p99_s", "never_visible")},
        "load_average_before": load_before,
        "load_average_after": load_after,
    }


def run(
    spark: SparkSession,
    *,
    config: WeirConfig,
    interval_s: Optional[float] = None,
    rate: int = RATE,
    merges: int = MEASURED_MERGES,
    running_stack: bool = False,
) -> SuiteResult:
    """One measurement (``--events`` and ``--repeat`` do not apply: it is a live run)."""
    from weir.infra import private_stack

    interval = float(interval_s or config.timing.merge_interval_seconds)
    result = SuiteResult(suite=SUITE)
    with tempfile.TemporaryDirectory(prefix="weir-bench-unified-") as folder:
        state = Path(folder)
        context = nullcontext(config) if running_stack else private_stack(config, state / "stack")
        with context as stack:
            topic = new_topic(stack, f"bench-unified-{int(time.time())}")
            bench = kafka_bench_config(stack, state / "lake", topic)
            figures = measure(spark, bench, interval, rate, merges)
    result.measurements = [
        Measurement(PRODUCED, figures["produced"], figures["produce_seconds"]),
    ]
    bound = interval + SLACK_SECONDS
    p99 = figures["p99_s"] if figures["p99_s"] is not None else math.inf
    result.checks = [
        {
            "check": f"freshness p99 <= merge interval + {SLACK_SECONDS} s = {bound:g} s "
            f"at {rate:,}/s",
            "value": p99,
            "met": p99 <= bound and not figures["lower_bound"],
        },
        {
            "check": "records never visible in telemetry_minute by the end == 0",
            "value": figures["never_visible"],
            "met": figures["never_visible"] == 0,
        },
        {
            "check": "at least 4 merges after the warm-up",
            "value": figures["merges_after_warmup"],
            "met": figures["merges_after_warmup"] >= 4,
        },
    ]
    result.environment = environment(
        master=spark.sparkContext.master,
        partitions=config.sources.kafka.partitions,
        freshness=figures,
    )
    return result
