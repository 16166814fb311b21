"""Benchmark of the contract path on local[N]: parse floor vs classify vs the whole batch view.

The floor is the same raw payloads through the same typed ``from_json`` into Spark's no-op
sink; a bare count() would read only file metadata and is no floor. Every measurement reads
the same Parquet file of generated RAW rows, so the ratios isolate what the contract adds.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.bench.harness import SuiteResult, Target, environment, timed
from weir.contract import (
    aggregate_minutes,
    classify_records,
    dedup_first_received,
    valid_events,
)
from weir.schemas import LAYER_BATCH, PAYLOAD_TYPED_SCHEMA, RAW_SCHEMA

SUITE = "contract"
DATA_DIR = Path("bench/data")
# About 1.5% of records carry a fault and 1% are producer-retry duplicates: a realistic mix,
# so the flagged-row second parse and the dedup aggregation are both exercised.
_PAYLOAD_SQL = """
CASE
  WHEN id % 500 = 7 THEN substr(payload_ok, 1, 40)
  WHEN id % 500 = 11 THEN replace(payload_ok, '"temperature_c":', '"temperature_c":"1') || ''
  ELSE payload_ok
END
"""


def generate_raw(spark: SparkSession, events: int, seed: int = 42) -> DataFrame:
    """RAW-shaped rows with realistic JSON payloads, deterministic for (events, seed)."""
    start = int(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp())
    ids = spark.range(events).withColumn(
        "event_key", F.when(F.col("id") % 100 == 99, F.col("id") - 1).otherwise(F.col("id"))
    )
    moment = F.timestamp_seconds(F.lit(start) + (F.col("event_key") * 0.05))
    payload = F.to_json(
        F.struct(
            F.concat(F.lit("evt-"), F.col("event_key").cast("string")).alias("event_id"),
            F.concat(F.lit("vehicle-"), (F.col("event_key") % 2000).cast("string")).alias(
                "device_id"
            ),
            F.date_format(moment, "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'").alias("event_time"),
            F.round(F.rand(seed) * 40 - 5, 2).alias("temperature_c"),
            F.round(F.rand(seed + 1) * 60 + 20, 1).alias("humidity_pct"),
            F.round(F.rand(seed + 2) * 100, 1).alias("battery_pct"),
            F.round(F.rand(seed + 3) * 120, 1).alias("speed_kmh"),
            F.round(F.rand(seed + 4) * 0.2 + 37.4, 5).alias("lat"),
            F.round(F.rand(seed + 5) * 0.2 + 126.9, 5).alias("lon"),
            F.element_at(
                F.array(F.lit("driving"), F.lit("parked"), F.lit("charging")),
                (F.col("event_key") % 3 + 1).cast("int"),
            ).alias("status"),
        )
    )
    ingest = F.timestamp_seconds(F.lit(start + 86_400))
    return (
        ids.withColumn("payload_ok", payload)
        .select(
            F.lit("bench").alias("source"),
            F.lit("bench").alias("source_stream"),
            (F.col("id") % 4).cast("string").alias("source_partition"),
            F.col("id").cast("string").alias("source_offset"),
            F.lit(None).cast("string").alias("record_key"),
            F.expr(_PAYLOAD_SQL).alias("payload"),
            F.lit(None).cast("timestamp").alias("arrival_time"),
            ingest.alias("ingest_time"),
            F.to_date(ingest).alias("ingest_date"),
            F.lit(None).cast("binary").alias("payload_bytes"),
        )
        .select(*(F.col(f.name).cast(f.dataType) for f in RAW_SCHEMA.fields))
    )


def prepared_raw(spark: SparkSession, events: int) -> DataFrame:
    """The generated RAW rows as Parquet under bench/data (made once per size, then reused)."""
    path = (DATA_DIR / f"raw-{events}.parquet").resolve()
    if not (path / "_SUCCESS").exists():
        generate_raw(spark, events).write.mode("overwrite").parquet(str(path))
    return spark.read.parquet(str(path))


def _noop(frame: DataFrame) -> None:
    frame.write.format("noop").mode("overwrite").save()


def run(spark: SparkSession, events: int = 2_000_000, repeat: int = 2) -> SuiteResult:
    raw = prepared_raw(spark, events)
    computed_at = datetime(2026, 1, 2, tzinfo=timezone.utc)
    result = SuiteResult(
        suite=SUITE,
        environment=environment(
            events=events,
            master=spark.sparkContext.master,
            shuffle_partitions=spark.conf.get("spark.sql.shuffle.partitions"),
        ),
    )
    result.measurements = [
        timed(
            "parse_floor",
            events,
            lambda: _noop(raw.select(F.from_json("payload", PAYLOAD_TYPED_SCHEMA).alias("p"))),
            repeat,
        ),
        timed("classify", events, lambda: _noop(raw.transform(classify_records)), repeat),
        timed(
            "batch_view",
            events,
            lambda: _noop(
                aggregate_minutes(
                    raw.transform(classify_records)
                    .transform(valid_events)
                    .transform(dedup_first_received),
                    LAYER_BATCH,
                    computed_at,
                )
            ),
            repeat,
        ),
    ]
    result.evaluate(
        [
            Target("classify", baseline="parse_floor", min_ratio=0.7),
            Target("batch_view", baseline="parse_floor", min_ratio=0.5, min_rate=110_000),
        ]
    )
    return result
