"""Benchmarks of `weir stream --source kafka`: backlog ingest beside the parse ceiling; freshness.

Ingest: the simulator fills a fresh topic with ``events`` records; then, in one session,

* ceiling — a plain Spark job reads the same topic (batch read, earliest to latest, the same
  consumer options) through the same typed ``from_json`` into the no-op sink, after a warm-up
  read so neither side pays for the session's first Kafka read;
* candidate — ``run_stream(..., available_now=True)``: the raw archiver (RAW + QUARANTINE)
  drains the topic, then the speed layer (contract, watermark, dedup, per-minute MERGE into
  SPEED) reads what RAW holds;
* bound — the least any raw+speed design must do, in one pass: the topic's records appended
  to a RAW Delta table and classified by the contract into the no-op sink (no QUARANTINE, no
  dedup, no windows, no SPEED). Its ratio to the ceiling bounds what the candidate can reach;
* the median seconds of one idempotent 5,000-row RAW append: the fixed cost of a commit.

Freshness: the stream runs with a 1 s trigger while the simulator produces at a steady rate,
started once both queries have finished a first trigger (steady state, not start-up).
A record is visible in SPEED when the speed micro-batch that read it has finished (its MERGE
committed). The chain, from ``_control/stream_progress`` and RAW's Delta log:

1. the raw batch that archived it: the raw query's batch whose Kafka offset range holds the
   record (``record_batches``);
2. the RAW version that batch committed: the commit carrying the archiver's transaction id
   (``txn.version`` = batch id, ``raw_batch_versions``);
3. the first speed batch whose Delta end offset reaches that version (``version_visibility``),
   which finished at trigger_time + duration.

Latency = that instant − the record's Kafka timestamp (set by the producer when it sent it).
"""

from __future__ import annotations

import tempfile
import threading
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
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
CEILING = "parse-ceiling"
CANDIDATE = "raw+speed"
BOUND = "archive+classify-bound"
FRESHNESS_RATE = 5000  # events/s
FRESHNESS_SECONDS = 60
FRESHNESS_WARMUP_SECONDS = 15  # the first batches pay for JIT and state-store set-up
DRAIN_TIMEOUT_SECONDS = 300
# A micro-batch's worth at the freshness rate with a 1 s trigger; the median of a few.
APPEND_ROWS = FRESHNESS_RATE
APPENDS = 7
_OFFSETS = MapType(StringType(), MapType(StringType(), LongType()))


def _backlog(config: WeirConfig, events: int) -> int:
    """Fill the topic as fast as the simulator goes; the history ends now (see bench.simulate)."""
    from weir.bench.simulate import simulate_options
    from weir.simulate.run import run_simulation

    sent = run_simulation(config, simulate_options(events, datetime.now(timezone.utc)))
    if sent.status != "completed":
        raise WeirError(f"simulator run {sent.run_id} ended {sent.status}")
    return sent.acknowledged


def _whole_topic(spark: SparkSession, config: WeirConfig) -> DataFrame:
    """The topic, earliest to latest, as a batch read with the stream's consumer options."""
    from weir.sources.kafka import kafka_options

    options = {
        k: v
        for k, v in kafka_options(config.sources.kafka).items()
        if k not in ("maxOffsetsPerTrigger", "startingOffsets")
    }
    return (
        spark.read.format("kafka")
        .options(**options)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
    )


def archive_classify_bound(spark: SparkSession, config: WeirConfig, raw_path: str) -> None:
    """The topic's records appended to a RAW Delta table at ``raw_path``, then classified by
    the contract into the no-op sink, from one read of the topic.

    The least work a raw+speed run must do (it also writes QUARANTINE, deduplicates,
    aggregates and merges into SPEED, and commits each micro-batch idempotently).
    """
    from weir.contract import classify_records
    from weir.schemas import RAW_PARTITION_COLUMNS
    from weir.sources.kafka import kafka_records
    from weir.sources.records import with_ingest_time

    records = (
        _whole_topic(spark, config).transform(kafka_records).transform(with_ingest_time).persist()
    )
    try:
        (
            records.write.format("delta")
            .mode("append")
            .partitionBy(*RAW_PARTITION_COLUMNS)
            .save(raw_path)
        )
        records.transform(classify_records).write.format("noop").mode("overwrite").save()
    finally:
        records.unpersist()


def idempotent_append_seconds(
    spark: SparkSession, config: WeirConfig, raw_path: str, rows: int, appends: int
) -> float:
    """Median seconds of one idempotent Delta append of ``rows`` RAW rows (the topic's first),
    as the raw archiver commits a micro-batch: the fixed cost of a commit on this machine.

    A record is visible in SPEED after at least two such commits (RAW, then SPEED), so this
    bounds the freshness a steady stream can reach here.
    """
    from weir.delta import append_once
    from weir.schemas import RAW_PARTITION_COLUMNS
    from weir.sources.kafka import kafka_records
    from weir.sources.records import with_ingest_time

    batch = (
        _whole_topic(spark, config)
        .limit(rows)
        .transform(kafka_records)
        .transform(with_ingest_time)
        .localCheckpoint()
    )
    seconds = []
    for version in range(appends):
        started = time.perf_counter()
        append_once(batch, raw_path, RAW_PARTITION_COLUMNS, "bench-append", version)
        seconds.append(time.perf_counter() - started)
    return sorted(seconds)[len(seconds) // 2]


def parse_ceiling(spark: SparkSession, config: WeirConfig) -> None:
    """The topic, earliest to latest, through the same typed JSON parse into the no-op sink."""
    (
        _whole_topic(spark, config)
        .select(F.from_json(F.col("value").cast("string"), PAYLOAD_TYPED_SCHEMA).alias("event"))
        .select("event.*")
        .write.format("noop")
        .mode("overwrite")
        .save()
    )


def _stream_available_now(spark: SparkSession, config: WeirConfig) -> None:
    from weir.layers.streaming import run_stream

    run_stream(spark, config, "kafka", available_now=True)


def record_batches(progress: DataFrame, raw: DataFrame, query_name: str) -> DataFrame:
    """Per RAW record: the batch of the Kafka query ``query_name`` that read it, and when that
    batch ended (``visible_at``, epoch seconds) and the record was sent (``sent_at``).

    ``progress`` is the stream_progress table, ``raw`` the RAW table; both of one topic.
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
    records = raw.select(
        F.col("source_partition").alias("partition"),
        F.col("source_offset").cast("long").alias("offset"),
        F.col("arrival_time").cast("double").alias("sent_at"),
    )
    return records.join(
        F.broadcast(batches),
        (records["partition"] == batches["partition"])
        & (records["offset"] >= batches["start_offset"])
        & (records["offset"] < batches["end_offset"]),
    ).select(records["partition"], "offset", "sent_at", "batch_id", "visible_at")


def _batch_end() -> Column:
    return F.col("trigger_time").cast("double") + F.col("batch_duration_ms") / 1000.0


def raw_batch_versions(delta_log: DataFrame) -> DataFrame:
    """(``batch_id``, ``version``): the RAW version each archiver batch committed.

    ``delta_log`` is RAW's ``_delta_log/*.json`` read as JSON with the file name in
    ``file``; the archiver's commits carry a ``txn`` action whose version is the batch id.
    """
    return delta_log.where(F.col("txn").isNotNull()).select(
        F.col("txn.version").cast("long").alias("batch_id"),
        F.regexp_extract("file", r"(\d+)\.json$", 1).cast("long").alias("version"),
    )


def version_visibility(progress: DataFrame, query_name: str) -> DataFrame:
    """(``version``, ``visible_at``): when the speed query ``query_name`` (reading RAW as a
    Delta stream) first finished a batch that read RAW version ``version``.

    A Delta end offset (v, i) means every file of versions before v and files 0..i of v were
    read (i = -1: none of v). A batch ending inside a version (more files than it takes per
    trigger) would count that version read early; the archiver's versions are a few files
    each, far below the speed query's per-trigger cap.
    """
    offset = "struct<reservoirVersion:long,index:long>"
    batches = (
        progress.where(F.col("query_name") == query_name)
        .where(F.col("num_input_rows") > 0)
        .select(
            _batch_end().alias("visible_at"),
            F.from_json("start_offset", offset).alias("start"),
            F.from_json("end_offset", offset).alias("end"),
        )
        .select(
            "visible_at",
            F.coalesce(F.col("start.reservoirVersion"), F.lit(-1)).alias("from_version"),
            F.when(F.col("end.index") >= 0, F.col("end.reservoirVersion"))
            .otherwise(F.col("end.reservoirVersion") - 1)
            .alias("to_version"),
        )
    )
    versions = batches.select(
        F.explode(F.sequence(F.greatest("from_version", F.lit(0)), "to_version")).alias("version"),
        "visible_at",
    )
    return versions.groupBy("version").agg(F.min("visible_at").alias("visible_at"))


def record_latencies(
    progress: DataFrame, raw: DataFrame, delta_log: DataFrame, raw_query: str, speed_query: str
) -> DataFrame:
    """Per RAW record: seconds from its Kafka timestamp to the end of the speed batch that
    first read the RAW version holding it (see the module docstring)."""
    archived = record_batches(progress, raw, raw_query).drop("visible_at")
    versions = raw_batch_versions(delta_log)
    visible = version_visibility(progress, speed_query)
    return (
        archived.join(versions, "batch_id")
        .join(visible, "version")
        .select(
            "partition",
            "offset",
            "sent_at",
            "batch_id",
            "version",
            (F.col("visible_at") - F.col("sent_at")).alias("latency_s"),
        )
    )


def _caught_up(spark: SparkSession, lake: LakeLayout, query: str, produced: int) -> bool:
    from weir.delta import table_version

    if table_version(spark, lake.stream_progress) is None:
        return False
    done = (
        spark.read.format("delta")
        .load(lake.stream_progress)
        .where(F.col("query_name") == query)
        .agg(F.sum("num_input_rows"))
        .first()[0]
    )
    return (done or 0) >= produced


def _wait_until_streaming(
    spark: SparkSession, names: tuple[str, ...], failure: list[BaseException]
) -> None:
    """Until every query in ``names`` is active and has finished a first trigger.

    Freshness is a steady-state figure: producing while the stream still creates its tables
    and plans its first batches would measure a start-up backlog, not the latency of a
    running stream.
    """
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while True:
        started = {query.name for query in spark.streams.active if query.lastProgress}
        if started.issuperset(names):
            return
        if failure or time.monotonic() > deadline:
            raise WeirError(f"the stream did not start: {failure or 'deadline'}")
        time.sleep(0.2)


def measure_freshness(
    spark: SparkSession, config: WeirConfig, seconds: int, rate: int
) -> dict[str, float]:
    """p50/p99/max latency (s) of records produced at ``rate`` for ``seconds``, after warm-up."""
    from weir.layers.streaming import run_stream
    from weir.layers.streaming.queries import raw_query_name, speed_query_name
    from weir.simulate.run import SimulateOptions

    lake = LakeLayout.from_config(config)
    stop = threading.Event()
    failure: list[BaseException] = []

    def stream() -> None:
        try:
            run_stream(spark, config, "kafka", available_now=False, stop=stop)
        except BaseException as error:  # reported by the caller
            failure.append(error)

    thread = threading.Thread(target=stream, name="bench-stream", daemon=True)
    thread.start()
    try:
        _wait_until_streaming(spark, (raw_query_name("kafka"), speed_query_name("kafka")), failure)
        sent = simulate_in_own_process(
            config,
            SimulateOptions(devices=rate, rate=rate, duration_s=seconds, sink="kafka", seed=3),
        )
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        query = speed_query_name("kafka")
        # The progress table is flushed every few seconds: wait until the speed query has
        # reported every record (a condition with a deadline).
        while not _caught_up(spark, lake, query, sent.acknowledged):
            if failure or time.monotonic() > deadline:
                raise WeirError(f"the stream did not catch up: {failure or 'deadline'}")
            time.sleep(1.0)
    finally:
        stop.set()
        thread.join(timeout=180)
    progress = spark.read.format("delta").load(lake.stream_progress)
    raw = spark.read.format("delta").load(lake.raw)
    first_sent = raw.agg(F.min(F.col("arrival_time").cast("double"))).first()[0]
    delta_log = spark.read.json(f"{lake.raw}/_delta_log/*.json").withColumn(
        "file", F.input_file_name()
    )
    latencies = record_latencies(
        progress, raw, delta_log, raw_query_name("kafka"), speed_query_name("kafka")
    ).where(F.col("sent_at") >= first_sent + FRESHNESS_WARMUP_SECONDS)
    row = latencies.agg(
        F.count(F.lit(1)).alias("records"),
        F.percentile_approx("latency_s", 0.5, 10_000).alias("p50"),
        F.percentile_approx("latency_s", 0.99, 10_000).alias("p99"),
        F.max("latency_s").alias("max"),
    ).first()
    return {
        "records": int(row["records"]),
        "p50_s": round(row["p50"], 3),
        "p99_s": round(row["p99"], 3),
        "max_s": round(row["max"], 3),
    }


def run(
    spark: SparkSession,
    *,
    events: int,
    repeat: int = 1,
    config: WeirConfig,
    running_stack: bool = False,
    freshness_seconds: Optional[int] = FRESHNESS_SECONDS,
) -> SuiteResult:
    """Ingest (best of ``repeat``) and, unless ``freshness_seconds`` is None, freshness."""
    from weir.infra import private_stack

    result = SuiteResult(suite=SUITE)
    checks_extra = []
    with tempfile.TemporaryDirectory(prefix="weir-bench-stream-") as folder:
        state = Path(folder)
        context = nullcontext(config) if running_stack else private_stack(config, state / "stack")
        with context as stack:
            topic = new_topic(stack, f"bench-ingest-{int(time.time())}")
            produced = _backlog(kafka_bench_config(stack, state / "unused", topic, 1), events)
            ceilings, candidates, bounds = [], [], []
            # Warm-up, not measured: the session's first Kafka read loads the client classes.
            parse_ceiling(spark, kafka_bench_config(stack, state / "unused", topic, 1))
            for attempt in range(repeat):
                bench = kafka_bench_config(stack, state / f"lake-{attempt}", topic, 1)
                started = time.perf_counter()
                parse_ceiling(spark, bench)
                ceilings.append(time.perf_counter() - started)
                started = time.perf_counter()
                _stream_available_now(spark, bench)
                candidates.append(time.perf_counter() - started)
                started = time.perf_counter()
                archive_classify_bound(spark, bench, str(state / f"bound-{attempt}"))
                bounds.append(time.perf_counter() - started)
            result.measurements = [
                Measurement(CEILING, produced, min(ceilings)),
                Measurement(CANDIDATE, produced, min(candidates)),
                Measurement(BOUND, produced, min(bounds)),
            ]
            append_seconds = idempotent_append_seconds(
                spark,
                kafka_bench_config(stack, state / "unused", topic, 1),
                str(state / "appends"),
                APPEND_ROWS,
                APPENDS,
            )
            freshness = None
            if freshness_seconds:
                live_topic = new_topic(stack, f"bench-fresh-{int(time.time())}")
                live = kafka_bench_config(stack, state / "lake-fresh", live_topic, 1)
                freshness = measure_freshness(spark, live, freshness_seconds, FRESHNESS_RATE)
                checks_extra = [
                    {
                        "check": f"freshness p50 <= 2 s at {FRESHNESS_RATE}/s, 1 s trigger",
                        "value": freshness["p50_s"],
                        "met": freshness["p50_s"] <= 2.0,
                    },
                    {
                        "check": f"freshness p99 <= 5 s at {FRESHNESS_RATE}/s, 1 s trigger",
                        "value": freshness["p99_s"],
                        "met": freshness["p99_s"] <= 5.0,
                    },
                ]
    result.environment = environment(
        master=spark.sparkContext.master,
        partitions=config.sources.kafka.partitions,
        freshness=freshness,
        idempotent_append_rows=APPEND_ROWS,
        idempotent_append_median_s=round(append_seconds, 3),
        load_average=load_average(),
        # What the least work reaches (see archive_classify_bound): the candidate's ratio and
        # rate cannot exceed these here.
        bound_ratio=round(
            result.measurement(BOUND).events_per_second
            / result.measurement(CEILING).events_per_second,
            3,
        ),
        bound_events_per_second=round(result.measurement(BOUND).events_per_second),
    )
    result.evaluate([Target(CANDIDATE, CEILING, min_ratio=0.5, min_rate=100_000)])
    result.checks.extend(checks_extra)
    return result
