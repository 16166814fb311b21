"""`weir bench plain-batch`: ``weir batch rebuild --full`` beside the plain batch job.

The plain job is the Spark SQL a data engineer writes first for the batch view: one
``from_json``, a validity filter (the required fields present, event_time a timestamp, the
metrics within the contract's bounds), ``dropDuplicates(event_id)``, a per-device 1-minute
window ``groupBy`` and a Delta overwrite. Weir's full rebuild does strictly more on the same
RAW: every invalid record quarantined with its reason, first-received dedup that holds across
runs (not "any one copy"), the event index for incremental runs, the run record. The figure
says what that costs.

Both run on the batch benchmark's generated RAW (weir.bench.batch.prepared_lake: 31 days,
2 % retries, 1 % invalid), in the same JVM, taking turns, best of ``repeat`` each; a first,
untimed round warms the JVM for both. Target: Weir >= 0.8 x the plain job's events/s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.bench.harness import Measurement, SuiteResult, Target, environment, load_average, timed
from weir.config import WeirConfig
from weir.contract.aggregate import minute_aggregates
from weir.contract.rules import METRIC_BOUNDS, WINDOW_DURATION
from weir.schemas import MINUTE_SCHEMA, PAYLOAD_TYPED_SCHEMA

SUITE = "plain-batch"
PLAIN = "plain_batch"
WEIR = "rebuild_full"
DEFAULT_EVENTS = 2_000_000
MIN_RATIO = 0.8


def parsed_events(raw: DataFrame) -> DataFrame:
    """RAW rows -> one row per record with the payload's typed fields (one ``from_json``)."""
    return raw.select(
        F.from_json("payload", PAYLOAD_TYPED_SCHEMA).alias("e"), "ingest_time"
    ).select("e.*", "ingest_time")


def plausible_events(events: DataFrame) -> DataFrame:
    """The filter a data engineer writes: required fields present, a parseable event_time,
    metrics null or within bounds. No reasons kept: what fails is dropped."""
    in_bounds = [
        F.col(name).isNull() | F.col(name).between(low, high)
        for name, (low, high) in METRIC_BOUNDS.items()
    ]
    typed = events.withColumn("event_time", F.to_timestamp("event_time"))
    condition = F.col("event_id").isNotNull() & F.col("device_id").isNotNull()
    condition = condition & F.col("event_time").isNotNull()
    for check in in_bounds:
        condition = condition & check
    return typed.where(condition)


def minute_view(events: DataFrame) -> DataFrame:
    """Per device and minute: the view's aggregates (the contract's own columns, so both
    jobs write the same figures)."""
    return (
        events.groupBy("device_id", F.window("event_time", WINDOW_DURATION).alias("window"))
        .agg(*minute_aggregates())
        .select(
            "device_id",
            F.col("window.start").alias("window_start"),
            F.col("window.end").alias("window_end"),
            F.to_date("window.start").alias("event_date"),
            *(F.col(f.name) for f in MINUTE_SCHEMA.fields[4:-2]),
        )
    )


def plain_batch_view(raw: DataFrame) -> DataFrame:
    """The whole plain job's transform: RAW -> the per-minute view."""
    return (
        raw.transform(parsed_events)
        .transform(plausible_events)
        .dropDuplicates(["event_id"])
        .transform(minute_view)
    )


def run_plain_batch(spark: SparkSession, raw_path: str, out: Path) -> None:
    """Read RAW, transform, overwrite the Delta table at ``out``."""
    view = spark.read.format("delta").load(raw_path).transform(plain_batch_view)
    view.write.format("delta").mode("overwrite").partitionBy("event_date").save(str(out))


def run(
    spark: SparkSession,
    *,
    events: int = DEFAULT_EVENTS,
    repeat: int = 1,
    config: WeirConfig,
    data_dir: Optional[Path] = None,
    warm_up: bool = True,
) -> SuiteResult:
    """Both jobs on the same generated RAW, taking turns after an untimed warm-up round
    (left out with ``warm_up`` False: the quick run checks the chain, not the speed)."""
    from weir.bench import batch
    from weir.control import MODE_FULL
    from weir.layers.batch import RebuildRequest, rebuild_batch

    load_before = load_average()
    lake = batch.prepared_lake(spark, events, data_dir or batch.DATA_DIR)
    on = config.model_copy(update={"lake": config.lake.model_copy(update={"root": lake.root})})
    total = batch.raw_counts(spark, lake).total
    out = Path(lake.root.removeprefix("file://")) / "plain-batch-view"
    request = RebuildRequest(cutoff=batch.FINAL_CUTOFF, mode=MODE_FULL)

    def weir() -> None:
        rebuild_batch(spark, on, request)

    def plain() -> None:
        run_plain_batch(spark, lake.raw, out)

    if warm_up:
        weir()
        plain()
    weirs: list[Measurement] = []
    plains: list[Measurement] = []
    for _ in range(repeat):
        plains.append(timed(PLAIN, total, plain))
        weirs.append(timed(WEIR, total, weir))
    result = SuiteResult(
        suite=SUITE,
        environment=environment(
            events=total,
            repeat=repeat,
            master=spark.sparkContext.master,
            shuffle_partitions=spark.conf.get("spark.sql.shuffle.partitions"),
            load_average_before=load_before,
            load_average_after=load_average(),
            weir_extra_work=[
                "quarantine with reasons",
                "first-received dedup across runs",
                "event index",
                "run record",
            ],
        ),
    )
    result.measurements = [
        min(plains, key=lambda m: m.seconds),
        min(weirs, key=lambda m: m.seconds),
    ]
    result.evaluate([Target(WEIR, baseline=PLAIN, min_ratio=MIN_RATIO)])
    return result
