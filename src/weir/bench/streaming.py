"""`weir bench streaming`: Weir's stream beside the plain job a data engineer writes first.

In one run, on one private broker, each scenario on a fresh topic:

* **drain** — the simulator fills a topic with ``events`` records (the default fault mix), then
  each job drains it from scratch with an available-now trigger:

  - ``plain-bronze``: Kafka -> ``from_json`` (the contract's typed schema) -> Delta append,
    one commit per micro-batch through ``foreachBatch``: what a data engineer writes first;
  - ``weir-stream``: ``run_stream(..., available_now=True)``, everything Weir writes: RAW
    and QUARANTINE (marked appends), SPEED (watermark, dedup, windows, appended versions).

  Target: Weir's records per second >= 0.5 x the plain job's.

* **freshness** — each job runs with a 1 s trigger while the simulator produces at 5,000
  events/s for ``FRESHNESS_SECONDS`` (started once the job has finished a first trigger, so
  start-up is not measured; the first ``FRESHNESS_WARMUP_SECONDS`` of records are left out).
  A record's latency runs from its Kafka timestamp (set by the producer when it sent it) to
  the end of the micro-batch that made it visible: for the plain job the batch that appended
  it to its table, for Weir the speed batch that appended its window's version to SPEED.
  Both ends come from the queries' own progress reports. Targets: Weir p50 <= 2 x plain p50,
  p99 <= 2 x plain p99. Weir's run is repeated with the raw archiver on a longer trigger
  (``COMPARED_ARCHIVE_TRIGGER_SECONDS``; the targets hold the default, the speed query's
  trigger), and each run records the archiver's batches too. Beside them, for the analysis,
  ``speed-floor``: the speed layer's
  query alone, appending the changed windows to a table of its own, with no archiver
  beside it (what no design that keeps the speed layer's dedup and windows can beat).

* **unified** — the stream, ``weir merge --every`` and the simulator together
  (:func:`weir.bench.unified.measure`): produce -> visible in ``telemetry_minute``. Target:
  p99 <= merge interval + 15 s.

* **memory** — a fleet of 100,000 devices reporting every 20 s for 12 minutes of event time
  (longer than the allowed lateness: the speed layer's state reaches its steady size) is
  drained by ``weir stream --available-now`` in a process of its own; the peak resident memory
  of its whole process tree (the Python driver, the JVM that is driver and executors in local
  mode, Python workers) is sampled every half second. Target: <= 3 GiB.

Figures go to ``bench/results/streaming-*.json`` with the machine's load average.
"""

from __future__ import annotations

import tempfile
import threading
import time
from contextlib import nullcontext
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Callable, Optional

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import LongType, MapType, StringType

from weir.bench.harness import (
    Measurement,
    SuiteResult,
    Target,
    environment,
    kafka_bench_config,
    load_average,
    new_topic,
    simulate_in_own_process,
)
from weir.config import WeirConfig
from weir.errors import WeirError
from weir.lake import LakeLayout
from weir.schemas import PAYLOAD_TYPED_SCHEMA

SUITE = "streaming"
PLAIN = "plain-bronze"
WEIR = "weir-stream"
FRESHNESS_RATE = 5000  # events/s
TRIGGER_SECONDS = 1
# A longer trigger for the raw archiver (timing.archive_trigger_seconds), measured beside the
# default (the speed query's) in the same run: docs/streaming.md, "Two triggers, two pools".
COMPARED_ARCHIVE_TRIGGER_SECONDS = 10
FRESHNESS_SECONDS = 60
FRESHNESS_WARMUP_SECONDS = 15  # the first batches pay for JIT and state-store set-up
UNIFIED_INTERVAL_SECONDS = 30
UNIFIED_SLACK_SECONDS = 15
DRAIN_TIMEOUT_SECONDS = 600
_OFFSETS = MapType(StringType(), MapType(StringType(), LongType()))


# --- The plain job ------------------------------------------------------------------------------


def plain_bronze_query(
    spark: SparkSession, config: WeirConfig, root: Path, available_now: bool
) -> StreamingQuery:
    """Kafka -> ``from_json`` -> Delta append in ``foreachBatch``, under ``root``.

    The freshness measure finds the batch that appended a record by its Kafka offset, from
    the query's progress reports, as for every other query here.
    """
    from weir.sources.kafka import kafka_options

    options = kafka_options(config.sources.kafka)
    table = str(root / "bronze")

    def append(batch: DataFrame, batch_id: int) -> None:
        batch.withColumn("batch_id", F.lit(batch_id)).write.format("delta").mode("append").save(
            table
        )

    parsed = (
        spark.readStream.format("kafka")
        .options(**options)
        .load()
        .select(
            F.col("partition").cast("string").alias("partition"),
            "offset",
            F.col("timestamp").cast("double").alias("sent_at"),
            F.from_json(F.col("value").cast("string"), PAYLOAD_TYPED_SCHEMA).alias("event"),
        )
        .select("partition", "offset", "sent_at", "event.*")
    )
    trigger = (
        {"availableNow": True}
        if available_now
        else {"processingTime": f"{config.timing.trigger_interval_seconds} seconds"}
    )
    return (
        parsed.writeStream.queryName(PLAIN)
        .foreachBatch(append)
        .option("checkpointLocation", str(root / "checkpoint"))
        .trigger(**trigger)
        .start()
    )


def with_archive_trigger(config: WeirConfig, seconds: Optional[int]) -> WeirConfig:
    """``config`` with the raw archiver triggered every ``seconds`` (None: with the speed
    query)."""
    timing = config.timing.model_copy(update={"archive_trigger_seconds": seconds})
    return config.model_copy(update={"timing": timing})


def _await(query: StreamingQuery, timeout: float) -> None:
    if not query.awaitTermination(timeout):
        query.stop()
        raise WeirError(f"{query.name} did not finish within {timeout:.0f}s")


def drain_plain(spark: SparkSession, config: WeirConfig, root: Path) -> None:
    _await(plain_bronze_query(spark, config, root, available_now=True), DRAIN_TIMEOUT_SECONDS)


def drain_weir(spark: SparkSession, config: WeirConfig) -> None:
    from weir.layers.streaming import run_stream

    run_stream(spark, config, "kafka", available_now=True)


# --- Which micro-batch made a record visible, and when -------------------------------------------


def _batch_end() -> Column:
    return F.col("trigger_time").cast("double") + F.col("batch_duration_ms") / 1000.0


def progress_rows(spark: SparkSession, reports: list[dict]) -> DataFrame:
    """Progress reports (``StreamingQuery.recentProgress``) as STREAM_PROGRESS_SCHEMA rows."""
    from weir.layers.streaming.progress import progress_row
    from weir.schemas import STREAM_PROGRESS_SCHEMA

    return spark.createDataFrame([progress_row(r) for r in reports], STREAM_PROGRESS_SCHEMA)


def record_batches(progress: DataFrame, records: DataFrame, query_name: str) -> DataFrame:
    """Per record: the batch of the Kafka query ``query_name`` that read it, and when that
    batch ended (``visible_at``, epoch seconds).

    ``progress``: STREAM_PROGRESS_SCHEMA rows; ``records``: ``partition`` (text),
    ``offset`` (long) and ``sent_at`` (epoch seconds) of the records of one topic.
    """
    batches = (
        progress.where(F.col("query_name") == query_name)
        .where(F.col("num_input_rows") > 0)
        .select(
            "batch_id",
            _batch_end().alias("visible_at"),
            F.from_json("start_offset", _OFFSETS).alias("start"),
            F.from_json("end_offset", _OFFSETS).alias("end"),
        )
        .select(
            "batch_id", "visible_at", F.explode("end").alias("topic", "end_by_partition"), "start"
        )
        .select(
            "batch_id",
            "visible_at",
            F.explode("end_by_partition").alias("partition", "end_offset"),
            "start",
            "topic",
        )
        .select(
            "batch_id",
            "visible_at",
            "partition",
            F.coalesce(F.col("start")[F.col("topic")][F.col("partition")], F.lit(0)).alias(
                "start_offset"
            ),
            "end_offset",
        )
    )
    return records.join(
        F.broadcast(batches),
        (records["partition"] == batches["partition"])
        & (records["offset"] >= batches["start_offset"])
        & (records["offset"] < batches["end_offset"]),
    ).select(records["partition"], "offset", "sent_at", "batch_id", "visible_at")


def latency_summary(latencies: DataFrame) -> dict:
    """p50 / p99 / max of ``latency_s`` and how many records were measured."""
    row = latencies.agg(
        F.count(F.lit(1)).alias("records"),
        F.percentile_approx("latency_s", 0.5, 10_000).alias("p50"),
        F.percentile_approx("latency_s", 0.99, 10_000).alias("p99"),
        F.max("latency_s").alias("max"),
    ).first()
    if not row["records"]:
        raise WeirError("no record was measured: the job read nothing after the warm-up")
    return {
        "records": int(row["records"]),
        "p50_s": round(row["p50"], 3),
        "p99_s": round(row["p99"], 3),
        "max_s": round(row["max"], 3),
    }


def _measured(latencies: DataFrame) -> DataFrame:
    first_sent = latencies.agg(F.min("sent_at")).first()[0]
    return latencies.where(F.col("sent_at") >= first_sent + FRESHNESS_WARMUP_SECONDS)


# --- Freshness ----------------------------------------------------------------------------------


def _produce_while(
    spark: SparkSession,
    config: WeirConfig,
    started: Callable[[], bool],
    failure: list[BaseException],
) -> int:
    """Once ``started()``, produce at FRESHNESS_RATE for FRESHNESS_SECONDS; the records sent."""
    from weir.simulate.run import SimulateOptions

    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while not started():
        if failure or time.monotonic() > deadline:
            raise WeirError(f"the job did not start: {failure or 'deadline'}")
        time.sleep(0.2)
    sent = simulate_in_own_process(
        config,
        SimulateOptions(
            devices=FRESHNESS_RATE,
            rate=FRESHNESS_RATE,
            duration_s=FRESHNESS_SECONDS,
            sink="kafka",
            seed=3,
        ),
    )
    return sent.acknowledged


def _wait_for(condition: Callable[[], bool], failure: list[BaseException], what: str) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while not condition():
        if failure or time.monotonic() > deadline:
            raise WeirError(f"{what}: {failure or 'deadline'}")
        time.sleep(1.0)


def _read_so_far(query: StreamingQuery) -> int:
    return sum(p["numInputRows"] for p in query.recentProgress)


def plain_freshness(spark: SparkSession, config: WeirConfig, root: Path) -> dict:
    """The plain job's latency per record (module doc), at FRESHNESS_RATE."""
    query = plain_bronze_query(spark, config, root, available_now=False)
    return _measure_query(spark, config, query, PLAIN)


def weir_freshness(spark: SparkSession, config: WeirConfig) -> dict:
    """Weir's latency per record: produced -> its window's version appended to SPEED (module
    doc)."""
    from weir.layers.streaming import run_stream
    from weir.layers.streaming.queries import raw_query_name, speed_query_name

    speed, raw = speed_query_name("kafka"), raw_query_name("kafka")
    stop = threading.Event()
    failure: list[BaseException] = []

    def stream() -> None:
        try:
            run_stream(spark, config, "kafka", available_now=False, stop=stop)
        except BaseException as error:  # reported by the caller
            failure.append(error)

    def speed_query() -> Optional[StreamingQuery]:
        return next((q for q in spark.streams.active if q.name == speed), None)

    def started() -> bool:
        active = {q.name for q in spark.streams.active if q.lastProgress is not None}
        return len(active) >= 2

    thread = threading.Thread(target=stream, name="bench-stream", daemon=True)
    thread.start()
    reports: list[dict] = []
    archive_reports: list[dict] = []
    try:
        sent = _produce_while(spark, config, started, failure)

        def caught_up() -> bool:
            query = speed_query()
            return query is not None and _read_so_far(query) >= sent

        _wait_for(caught_up, failure, "the speed layer did not catch up")
        query = speed_query()
        reports = [dict(p) for p in query.recentProgress] if query is not None else []
        archiver = next((q for q in spark.streams.active if q.name == raw), None)
        archive_reports = [dict(p) for p in archiver.recentProgress] if archiver else []
    finally:
        stop.set()
        thread.join(timeout=300)
    figures = _latencies(spark, config, reports, speed)
    figures["batches"] = batch_profile(reports)
    figures["archive_batches"] = batch_profile(archive_reports)
    figures["archive_batches"]["count"] = sum(1 for r in archive_reports if r["numInputRows"])
    figures["speed_writes"] = write_profile(spark, LakeLayout.from_config(config).speed)
    return figures


# Delta's metrics of SPEED's commits worth a median: appends (WRITE) of window versions, and
# MERGEs where a table still gets them.
WRITE_METRICS = (
    "executionTimeMs",
    "scanTimeMs",
    "rewriteTimeMs",
    "numSourceRows",
    "numOutputRows",
    "numFiles",
    "numTargetRowsUpdated",
    "numTargetRowsInserted",
)


def write_profile(spark: SparkSession, path: str) -> dict:
    """Per operation on the table at ``path`` (WRITE, MERGE): how many commits and the
    medians of Delta's metrics for them: where a SPEED write's time goes."""
    from delta.tables import DeltaTable

    history = (
        DeltaTable.forPath(spark, path).history().where(F.col("operation").isin("WRITE", "MERGE"))
    )
    profile = {}
    for row in (
        history.groupBy("operation")
        .agg(
            F.count(F.lit(1)).alias("commits"),
            *(
                F.percentile_approx(F.col("operationMetrics")[name].cast("double"), 0.5).alias(name)
                for name in WRITE_METRICS
            ),
        )
        .collect()
    ):
        profile[row["operation"]] = {
            name: row[name] for name in ("commits", *WRITE_METRICS) if row[name] is not None
        }
    return profile


def batch_profile(reports: list[dict]) -> dict:
    """Medians of a micro-batch's phases (``durationMs`` of its progress reports, in
    ms) over the batches that read records: Spark's own split of a trigger."""
    phases: dict[str, list[float]] = {}
    for report in reports:
        if not report.get("numInputRows"):
            continue
        for phase, ms in (report.get("durationMs") or {}).items():
            phases.setdefault(phase, []).append(float(ms))
        for operator in report.get("stateOperators") or []:
            for key in ("commitTimeMs", "allUpdatesTimeMs", "allRemovalsTimeMs"):
                name = f"{operator.get('operatorName', 'state')}.{key}"
                phases.setdefault(name, []).append(float(operator.get(key) or 0))
    return {phase: sorted(values)[len(values) // 2] for phase, values in sorted(phases.items())}


def speed_floor_freshness(spark: SparkSession, config: WeirConfig, root: Path) -> dict:
    """The speed layer's query with its MERGE replaced by a blind append of the changed
    windows: the contract's parse, watermark, dedup and windows, one commit, no upsert. The
    least a design that keeps the speed layer's semantics must do; what it cannot reach, no
    SPEED write can."""
    from weir.layers.streaming.speed import speed_minutes
    from weir.sources import source_records

    name = "speed-floor"
    table = str(root / "windows")

    def append(minutes: DataFrame, batch_id: int) -> None:
        minutes.write.format("delta").mode("append").save(table)

    minutes = speed_minutes(
        source_records(spark, config, "kafka"), config.timing.allowed_lateness_minutes
    )
    query = (
        minutes.writeStream.queryName(name)
        .outputMode("update")
        .foreachBatch(append)
        .option("checkpointLocation", str(root / "checkpoint"))
        .trigger(processingTime=f"{config.timing.trigger_interval_seconds} seconds")
        .start()
    )
    return _measure_query(spark, config, query, name)


def _measure_query(
    spark: SparkSession, config: WeirConfig, query: StreamingQuery, name: str
) -> dict:
    """Produce at FRESHNESS_RATE once ``query`` runs; its latency per record."""
    failure: list[BaseException] = []
    try:
        sent = _produce_while(spark, config, lambda: query.lastProgress is not None, failure)
        _wait_for(lambda: _read_so_far(query) >= sent, failure, f"{name} did not catch up")
        reports = [dict(p) for p in query.recentProgress]
    finally:
        query.stop()
    figures = _latencies(spark, config, reports, name)
    figures["batches"] = batch_profile(reports)
    return figures


def _latencies(spark: SparkSession, config: WeirConfig, reports: list[dict], name: str) -> dict:
    """Per record of the topic: the end of the batch of query ``name`` that read it - its
    Kafka timestamp; summarised after the warm-up."""
    from weir.sources.kafka import whole_topic

    records = whole_topic(spark, config.sources.kafka).select(
        F.col("partition").cast("string").alias("partition"),
        "offset",
        F.col("timestamp").cast("double").alias("sent_at"),
    )
    latencies = record_batches(progress_rows(spark, reports), records, name).select(
        "sent_at", (F.col("visible_at") - F.col("sent_at")).alias("latency_s")
    )
    return latency_summary(_measured(latencies))


def unified_freshness(spark: SparkSession, config: WeirConfig) -> dict:
    from weir.bench import unified

    return unified.measure(spark, config, UNIFIED_INTERVAL_SECONDS, rate=FRESHNESS_RATE // 5)


# --- Memory -------------------------------------------------------------------------------------

MEMORY_DEVICES = 100_000
MEMORY_INTERVAL_S = 20
MEMORY_MINUTES = 12
MEMORY_LIMIT_BYTES = 3 << 30


def _tree_rss(root: int) -> int:
    """Resident bytes of process ``root`` and its descendants, from /proc (0 once gone)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        pending.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def memory_peak(config: WeirConfig, folder: Path) -> dict:
    """Peak RSS of a ``weir stream --available-now`` process tree draining a 100,000-device
    backlog (module doc)."""
    import subprocess
    import sys

    import yaml

    from weir.simulate.run import SimulateOptions, run_simulation

    events = MEMORY_DEVICES * MEMORY_MINUTES * 60 // MEMORY_INTERVAL_S
    now = datetime.now(timezone.utc)
    sent = run_simulation(
        config,
        SimulateOptions(
            devices=MEMORY_DEVICES,
            rate=0,
            count=events,
            sink="kafka",
            seed=4,
            start=now - timedelta(minutes=MEMORY_MINUTES + 1),
            interval_s=MEMORY_INTERVAL_S,
        ),
    )
    conf = folder / "memory.yaml"
    conf.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    weir = Path(sys.executable).parent / "weir"
    command = [str(weir), "stream", "--conf", str(conf), "--source", "kafka", "--available-now"]
    log = folder / "memory-stream.log"
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=folder)
        peak = 0
        while process.poll() is None:
            peak = max(peak, _tree_rss(process.pid))
            if time.monotonic() - started > DRAIN_TIMEOUT_SECONDS * 3:
                process.kill()
                raise WeirError(f"the memory run did not finish; see {log}")
            time.sleep(0.5)
    if process.returncode != 0:
        raise WeirError(f"the memory run failed ({process.returncode}): {log.read_text()[-2000:]}")
    return {
        "devices": MEMORY_DEVICES,
        "events": sent.acknowledged,
        "seconds": round(time.monotonic() - started, 1),
        "peak_rss_bytes": peak,
        "peak_rss_gib": round(peak / (1 << 30), 3),
    }


# --- The suite ----------------------------------------------------------------------------------


def _backlog(config: WeirConfig, events: int) -> int:
    """Fill the topic as fast as the simulator goes (default fault mix)."""
    from weir.bench.simulate import simulate_options
    from weir.simulate.run import run_simulation

    sent = run_simulation(config, simulate_options(events, datetime.now(timezone.utc)))
    if sent.status != "completed":
        raise WeirError(f"simulator run {sent.run_id} ended {sent.status}")
    return sent.acknowledged


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _freshness_checks(plain: dict, weir: dict) -> list[dict]:
    return [
        {
            "check": f"SPEED freshness {q} <= 2 x plain-bronze {q} at {FRESHNESS_RATE}/s, "
            f"{TRIGGER_SECONDS} s trigger",
            "value": weir[f"{q}_s"],
            "baseline": plain[f"{q}_s"],
            "met": weir[f"{q}_s"] <= 2 * plain[f"{q}_s"],
        }
        for q in ("p50", "p99")
    ]


def run(
    spark: SparkSession,
    *,
    events: int,
    repeat: int = 1,
    config: WeirConfig,
    running_stack: bool = False,
    freshness: bool = True,
    unified: bool = True,
    memory: bool = True,
    speed_floor: bool = True,
    archive_triggers: tuple[Optional[int], ...] = (None, COMPARED_ARCHIVE_TRIGGER_SECONDS),
) -> SuiteResult:
    """Drain (best of ``repeat`` each, taking turns), then freshness and unified freshness.

    ``archive_triggers``: Weir's freshness is measured once per archiver trigger (None: the
    speed query's); the first is the one held to the targets, the others are for comparison
    in the same run.
    """
    from weir.infra import private_stack

    result = SuiteResult(suite=SUITE)
    figures: dict = {"load_average_before": load_average()}
    # Every progress report of a freshness run, not the last 100: they hold the batches' ends.
    spark.conf.set("spark.sql.streaming.numRecentProgressUpdates", "100000")
    with tempfile.TemporaryDirectory(prefix="weir-bench-stream-") as folder:
        state = Path(folder)
        context = nullcontext(config) if running_stack else private_stack(config, state / "stack")
        with context as stack:

            def on(topic: str, name: str) -> WeirConfig:
                return kafka_bench_config(stack, state / name, topic, TRIGGER_SECONDS)

            topic = new_topic(stack, f"bench-drain-{int(time.time())}")
            produced = _backlog(on(topic, "backlog"), events)
            plains, weirs = [], []
            for attempt in range(repeat):
                plains.append(
                    _timed(partial(drain_plain, spark, on(topic, "p"), state / f"plain-{attempt}"))
                )
                weirs.append(_timed(partial(drain_weir, spark, on(topic, f"weir-{attempt}"))))
            result.measurements = [
                Measurement(PLAIN, produced, min(plains)),
                Measurement(WEIR, produced, min(weirs)),
            ]
            if freshness:
                live = new_topic(stack, f"bench-plain-{int(time.time())}")
                figures["plain_freshness"] = plain_freshness(
                    spark, on(live, "fresh-plain"), state / "fresh-plain"
                )
                by_trigger = {}
                for archive_s in archive_triggers:
                    seconds = archive_s or TRIGGER_SECONDS
                    live = new_topic(stack, f"bench-weir-{int(time.time())}")
                    by_trigger[seconds] = weir_freshness(
                        spark, with_archive_trigger(on(live, f"fresh-weir-{seconds}s"), archive_s)
                    )
                held = archive_triggers[0] or TRIGGER_SECONDS
                figures["weir_freshness_by_archive_trigger_s"] = by_trigger
                figures["weir_freshness"] = by_trigger[held]
                figures["archive_trigger_s"] = held
                figures["scheduler_mode"] = spark.conf.get("spark.scheduler.mode", "FIFO")
                if speed_floor:
                    live = new_topic(stack, f"bench-floor-{int(time.time())}")
                    figures["speed_floor_freshness"] = speed_floor_freshness(
                        spark, on(live, "fresh-floor"), state / "fresh-floor"
                    )
            if unified:
                live = new_topic(stack, f"bench-unified-{int(time.time())}")
                figures["unified_freshness"] = unified_freshness(spark, on(live, "unified"))
            if memory:
                live = new_topic(stack, f"bench-memory-{int(time.time())}")
                figures["memory"] = memory_peak(on(live, "memory"), state)
    figures["load_average_after"] = load_average()
    result.environment = environment(
        master=spark.sparkContext.master,
        partitions=config.sources.kafka.partitions,
        trigger_s=TRIGGER_SECONDS,
        **figures,
    )
    result.evaluate([Target(WEIR, PLAIN, min_ratio=0.5)])
    if freshness:
        result.checks.extend(
            _freshness_checks(figures["plain_freshness"], figures["weir_freshness"])
        )
    if unified:
        bound = UNIFIED_INTERVAL_SECONDS + UNIFIED_SLACK_SECONDS
        p99 = figures["unified_freshness"]["p99_s"]
        result.checks.append(
            {
                "check": f"unified freshness p99 <= merge interval + {UNIFIED_SLACK_SECONDS} s "
                f"= {bound} s",
                "value": p99,
                "met": p99 is not None and p99 <= bound,
            }
        )
    if memory:
        peak = figures["memory"]["peak_rss_bytes"]
        result.checks.append(
            {
                "check": f"peak RSS of the stream's process tree at {MEMORY_DEVICES:,} devices "
                "<= 3 GiB",
                "value": figures["memory"]["peak_rss_gib"],
                "met": peak <= MEMORY_LIMIT_BYTES,
            }
        )
    return result
