"""Benchmark of `weir dq run`: the suites against one hand-written aggregation pass.

The lake (made once per size under ``bench/data/dq-<events>/``): the batch benchmark's
generated RAW records (weir.bench.batch.generate_raw: 31 days, 1% invalid, 2% retries), their
QUARANTINE rows, a full batch run (the real batch layer: BATCH, its event index, the run
record), SPEED as the same windows with ``layer = 'speed'`` and the unified table published by
the real merge.

Measured in one run, on that lake (docs/quality.md, "Measured"):

* ``aggregation_pass``: what someone would write by hand to get the same numbers: one
  aggregation per table (counts, null counts of the key columns, out-of-range counts,
  distinct window keys, the newest window), the unified table's events per hour, and the
  batch-vs-speed join per day; nothing validated, nothing written;
* ``dq_run``: ``run_checks`` with every suite: pinning, the metrics passes, Great
  Expectations, the ``dq/results`` commit and the Data Docs;
* ``dq_validate``: the Great Expectations part alone (validations and the Data Docs build) on
  the same frames: the fixed cost the suites add to the passes.

Target: ``dq_run`` takes at most 1.5 x ``aggregation_pass`` (a ratio of events/s >= 1 / 1.5).
Every measurement's ``events`` is the RAW records of the lake.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.bench.batch import FINAL_CUTOFF, generate_raw
from weir.bench.harness import SuiteResult, Target, environment, load_average, timed
from weir.config import WeirConfig, config_from_mapping
from weir.contract import classify_records, quarantine_rows
from weir.contract.rules import METRIC_BOUNDS, all_reasons
from weir.lake import LakeLayout
from weir.schemas import (
    LAYER_SPEED,
    MINUTE_PARTITION_COLUMNS,
    QUARANTINE_PARTITION_COLUMNS,
    RAW_PARTITION_COLUMNS,
)

SUITE = "dq"
DATA_DIR = Path("bench/data")
DEFAULT_EVENTS = 10_000_000
MAX_SLOWDOWN = 1.5
_GENERATED_MARKER = "_GENERATED"

log = logging.getLogger(__name__)


def _bench_config(base: WeirConfig, root: Path) -> WeirConfig:
    document = base.model_dump()
    document["lake"] = {"root": f"file://{root}", "landing": None}
    return config_from_mapping(document, environ={})


def prepared_lake(spark: SparkSession, config: WeirConfig, events: int) -> None:
    """Make the lake of ``config`` unless a complete one is there (module doc)."""
    from weir.layers.batch import RebuildRequest, rebuild_batch
    from weir.serving import run_merge

    lake = LakeLayout.from_config(config)
    folder = Path(lake.root[len("file://") :])
    if (folder / _GENERATED_MARKER).exists():
        for derived in ("dq",):
            shutil.rmtree(folder / derived, ignore_errors=True)
        return
    shutil.rmtree(folder, ignore_errors=True)
    raw = generate_raw(spark, events)
    raw.write.format("delta").partitionBy(*RAW_PARTITION_COLUMNS).save(lake.raw)
    stored = spark.read.format("delta").load(lake.raw)
    stored.transform(classify_records).transform(quarantine_rows).write.format("delta").partitionBy(
        *QUARANTINE_PARTITION_COLUMNS
    ).save(lake.quarantine)
    rebuild_batch(spark, config, RebuildRequest(cutoff=FINAL_CUTOFF, mode="full"))
    spark.read.format("delta").load(lake.batch).withColumn(
        "layer", F.lit(LAYER_SPEED)
    ).write.format("delta").partitionBy(*MINUTE_PARTITION_COLUMNS).save(lake.speed)
    run_merge(spark, config)
    (folder / _GENERATED_MARKER).write_text(f"{events} records\n")


# --- The hand-written pass -------------------------------------------------------------------


def _nulls(frame: DataFrame, columns: list[str]) -> list:
    return [F.count(F.when(F.col(c).isNull(), 1)) for c in columns]


def _zone(frame: DataFrame, keys: list[str], reasons: bool) -> list:
    extra = [F.count(F.when(~F.col("reason").isin(list(all_reasons())), 1))] if reasons else []
    before = F.count(F.when(F.col("ingest_time") < F.lit(FINAL_CUTOFF), 1))
    return frame.agg(F.count(F.lit(1)), before, *_nulls(frame, keys), *extra).collect()


def _view(frame: DataFrame, hourly: bool) -> list:
    keys = ["device_id", "window_start", "window_end", "event_date", "event_count"]
    keys += ["layer", "computed_at"]
    ranges = []
    for column in frame.columns:
        for field, (low, high) in METRIC_BOUNDS.items():
            if column.startswith(f"{field}_"):
                value = F.col(column)
                ranges += [F.count(F.when((value < low) | (value > high), 1)), F.count(value)]
    totals = frame.agg(
        F.count(F.lit(1)),
        *_nulls(frame, keys),
        *ranges,
        F.count_distinct(F.struct("device_id", "window_start")),
        F.max("window_end"),
    ).collect()
    if hourly:
        hour = F.date_trunc("hour", "window_start")
        totals += frame.groupBy(hour).agg(F.sum("event_count")).collect()
    return totals


def _agreement(batch: DataFrame, speed: DataFrame, horizon: object) -> list:
    averages = ["temperature_c_avg", "humidity_pct_avg", "speed_kmh_avg"]
    left = batch.where(F.col("window_end") <= F.lit(horizon)).select(
        "device_id", "window_start", "event_date", "event_count", *averages
    )
    right = speed.select(
        "device_id",
        "window_start",
        F.col("event_count").alias("s_count"),
        *(F.col(c).alias(f"s_{c}") for c in averages),
    )
    agree = F.col("event_count") == F.col("s_count")
    for column in averages:
        near = F.abs(F.col(column) - F.col(f"s_{column}")) <= 1e-6 * F.greatest(
            F.abs(column), F.abs(f"s_{column}"), F.lit(1.0)
        )
        agree = agree & ((F.col(column).isNull() & F.col(f"s_{column}").isNull()) | near)
    joined = left.join(right, ["device_id", "window_start"])
    return joined.groupBy("event_date").agg(F.count(F.lit(1)), F.count(F.when(agree, 1))).collect()


def aggregation_pass(spark: SparkSession, lake: LakeLayout, horizon: object) -> None:
    """The same metrics as the suites, the direct way (module doc)."""
    raw_keys = ["source", "source_stream", "source_partition", "source_offset"]
    raw_keys += ["ingest_time", "ingest_date"]
    _zone(spark.read.format("delta").load(lake.raw), raw_keys, reasons=False)
    _zone(spark.read.format("delta").load(lake.quarantine), [*raw_keys, "reason"], reasons=True)
    batch = spark.read.format("delta").load(lake.batch)
    speed = spark.read.format("delta").load(lake.speed)
    _view(batch, hourly=False)
    _view(speed, hourly=False)
    _view(spark.read.format("delta").load(lake.serving), hourly=True)
    _agreement(batch, speed, horizon)


# --- The suite ----------------------------------------------------------------------------------


def run(
    spark: SparkSession,
    events: int = DEFAULT_EVENTS,
    repeat: int = 1,
    config: Optional[WeirConfig] = None,
    data_dir: Path = DATA_DIR,
) -> SuiteResult:
    """Make (or reuse) the lake, then measure; best of ``repeat`` for every figure."""
    from weir.config import load_config
    from weir.control import COMPLETE_MODES, latest_batch_run
    from weir.quality.metrics import utc_from_micros
    from weir.quality.run import chosen_suites, plan_checks, run_checks
    from weir.quality.validate import validate

    load_before = load_average()
    bench_config = _bench_config(config or load_config(), (data_dir / f"dq-{events}").resolve())
    prepared_lake(spark, bench_config, events)
    lake = LakeLayout.from_config(bench_config)
    batch_run = latest_batch_run(spark, lake, COMPLETE_MODES)
    assert batch_run is not None  # prepared_lake made one
    horizon = batch_run.horizon
    # The checks' clock: just after the newest window, as on a live lake (fresh).
    serving = spark.read.format("delta").load(lake.serving)
    newest = serving.agg(F.max(F.unix_micros("window_end"))).first()[0]
    now = utc_from_micros(newest) + timedelta(minutes=5)

    def checks() -> None:
        run_checks(spark, bench_config, clock=lambda: now)

    checks()  # untimed: plans compiled and GX's modules imported once in this JVM
    baseline = timed(
        "aggregation_pass", events, lambda: aggregation_pass(spark, lake, horizon), repeat
    )
    candidate = timed("dq_run", events, checks, repeat)
    plan = plan_checks(spark, bench_config, chosen_suites(None), now, batch_run)

    def validate_only() -> None:
        with tempfile.TemporaryDirectory(prefix="weir-bench-dq-") as folder:
            validate(plan.validations, batch_run.run_id, now, plan.versions(), Path(folder))

    validation = timed("dq_validate", events, validate_only, repeat)
    result = SuiteResult(
        suite=SUITE,
        measurements=[baseline, candidate, validation],
        environment=environment(
            events=events,
            expectations=sum(len(v.expectations) for v in plan.validations),
            validations=len(plan.validations),
            load_average_before=load_before,
            load_average_after=load_average(),
        ),
    )
    result.evaluate([Target("dq_run", "aggregation_pass", min_ratio=round(1 / MAX_SLOWDOWN, 3))])
    return result


__all__ = ["DEFAULT_EVENTS", "SUITE", "aggregation_pass", "prepared_lake", "run"]
