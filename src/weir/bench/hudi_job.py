"""The Hudi side of `weir bench hudi`: a Structured Streaming job from the Kafka topic into a
Hudi table, run as its own process with its own Spark session (Hudi's extensions, the Hudi
bundle instead of Delta's jars): never inside a Weir job's JVM.

    python -m weir.bench.hudi_job MODE --conf C --table-type T [--table-type T2] \
        --root DIR --status FILE

MODE ``drain``: an available-now run of the topic into a table of each type given (one
after the other, ``DIR/<type>/table``); ``live``: a 1 s trigger until the file
``DIR/stop`` appears (progress reports are dumped into the status file at the end); ``count``:
rows and distinct event ids in the table. The status file is JSON, replaced atomically, so
the parent (weir.bench.hudi) can poll it.

How the job says "first received wins": the upsert is keyed by ``event_id``; the precombine
(ordering) field is ``receive_rank`` = minus the record's Kafka timestamp in microseconds,
and the table's merge mode is EVENT_TIME_ORDERING, so of two copies of an event, within a
micro-batch or across commits, the one with the greater rank - the one received first - is
kept.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.config import WeirConfig, load_config
from weir.schemas import PAYLOAD_TYPED_SCHEMA

COPY_ON_WRITE = "COPY_ON_WRITE"
MERGE_ON_READ = "MERGE_ON_READ"
TABLE_TYPES = (COPY_ON_WRITE, MERGE_ON_READ)
HUDI_JARS_DIR = Path(".jars/hudi")
# Of Weir's jar folder, only what the Kafka source needs: Delta's jars stay out of this JVM.
KAFKA_JAR_PREFIXES = (
    "spark-sql-kafka",
    "spark-token-provider-kafka",
    "kafka-clients",
    "commons-pool2",
)
QUERY_NAME = "hudi-upsert"
RECEIVE_RANK = "receive_rank"
STOP_FILE = "stop"


def hudi_jars(weir_jars_dir: str, hudi_jars_dir: Path = HUDI_JARS_DIR) -> list[str]:
    """The Hudi bundle and the Kafka source's jars; a clear error if `make bench-deps` has not
    run."""
    from weir.errors import WeirError

    bundle = sorted(str(p.resolve()) for p in hudi_jars_dir.glob("hudi-spark*-bundle*.jar"))
    if not bundle:
        raise WeirError(f"no Hudi bundle in {hudi_jars_dir}; run `make bench-deps`")
    kafka = sorted(
        str(p.resolve())
        for p in Path(weir_jars_dir).glob("*.jar")
        if p.name.startswith(KAFKA_JAR_PREFIXES)
    )
    return bundle + kafka


def hudi_session_settings(config: WeirConfig, jars: list[str]) -> dict[str, str]:
    """Weir's session settings with Delta's replaced by Hudi's (its extension, catalog and
    serializer, as Hudi's quick start sets them) and the Hudi jars. The catalog is in memory:
    Weir's local metastore is an embedded Derby that admits one JVM at a time, and the
    benchmark's Weir session is running beside this one."""
    from weir.spark import UTC_JAVA_OPTION, metastore_settings, spark_settings

    weir_only = set(metastore_settings(config)) | {"spark.sql.catalogImplementation"}
    settings = {
        key: value
        for key, value in spark_settings(config).items()
        if not key.startswith("spark.databricks.delta") and key not in weir_only
    }
    settings.update(
        {
            "spark.sql.extensions": "org.apache.spark.sql.hudi.HoodieSparkSessionExtension",
            "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.hudi.catalog.HoodieCatalog",
            "spark.sql.catalogImplementation": "in-memory",
            "spark.driver.extraJavaOptions": UTC_JAVA_OPTION,
            "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
            "spark.kryo.registrator": "org.apache.spark.HoodieSparkKryoRegistrar",
            "spark.jars": ",".join(jars),
            "spark.app.name": "weir-bench-hudi",
        }
    )
    return settings


def hudi_events(kafka_rows: DataFrame) -> DataFrame:
    """Kafka rows -> the events to upsert: one ``from_json``, records without an event id
    (null or blank), device id or readable event time dropped (Hudi refuses such a key and
    stops the stream; a plain job keeps no reasons),
    the receive rank (first received = greatest) and the partition path (event date)."""
    event = F.from_json(F.col("value").cast("string"), PAYLOAD_TYPED_SCHEMA)
    fields = [f.name for f in PAYLOAD_TYPED_SCHEMA.fields if not f.name.startswith("_")]
    return (
        kafka_rows.select(event.alias("e"), "timestamp", "partition", "offset")
        .select(
            *(F.col(f"e.{name}").alias(name) for name in fields if name != "event_time"),
            F.to_timestamp("e.event_time").alias("event_time"),
            (-F.unix_micros("timestamp")).alias(RECEIVE_RANK),
            F.col("timestamp").alias("received_at"),
        )
        .where(
            (F.trim("event_id") != "")  # Hudi refuses an empty key (and null != "" is null)
            & (F.trim("device_id") != "")
            & F.col("event_time").isNotNull()
        )
        .withColumn("event_date", F.to_date("event_time").cast("string"))
    )


def hudi_write_options(table_type: str, table_name: str) -> dict[str, str]:
    """Upsert keyed by event_id, first received wins (module doc), partitioned by event date."""
    if table_type not in TABLE_TYPES:
        raise ValueError(f"table type must be one of {TABLE_TYPES}, not {table_type!r}")
    return {
        "hoodie.table.name": table_name,
        "hoodie.datasource.write.table.type": table_type,
        "hoodie.datasource.write.operation": "upsert",
        "hoodie.datasource.write.recordkey.field": "event_id",
        "hoodie.datasource.write.partitionpath.field": "event_date",
        "hoodie.datasource.write.precombine.field": RECEIVE_RANK,
        "hoodie.record.merge.mode": "EVENT_TIME_ORDERING",
        "hoodie.datasource.write.hive_style_partitioning": "true",
    }


def _write_status(path: Path, document: dict) -> None:
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(document))
    os.replace(partial, path)


def _query(spark: SparkSession, config: WeirConfig, table_type: str, root: Path, trigger: dict):
    from weir.sources.kafka import kafka_options

    events = (
        spark.readStream.format("kafka")
        .options(**kafka_options(config.sources.kafka))
        .load()
        .transform(hudi_events)
    )
    return (
        events.writeStream.queryName(QUERY_NAME)
        .format("hudi")
        .options(**hudi_write_options(table_type, "bench_" + table_type.lower()))
        .option("checkpointLocation", str(root / "checkpoint"))
        .outputMode("append")
        .trigger(**trigger)
        .start(str(root / "table"))
    )


def _read_so_far(query) -> int:
    return sum(p["numInputRows"] for p in query.recentProgress)


def drain(
    spark: SparkSession, config: WeirConfig, table_types: list[str], root: Path, status: Path
) -> None:
    """Drain the topic into one table per type under ``root/<type>``, one after the other;
    each run's seconds count from its query's start (not this JVM's)."""
    figures: dict = {}
    for table_type in table_types:
        started = time.perf_counter()
        query = _query(spark, config, table_type, root / table_type, {"availableNow": True})
        query.awaitTermination()
        if query.exception() is not None:
            raise RuntimeError(str(query.exception()))
        figures[table_type] = {
            "seconds": time.perf_counter() - started,
            "read": _read_so_far(query),
            "batches": len(query.recentProgress),
        }
    _write_status(status, {"done": True, "runs": figures})


def live(spark: SparkSession, config: WeirConfig, table_type: str, root: Path, status: Path):
    trigger = {"processingTime": f"{config.timing.trigger_interval_seconds} seconds"}
    query = _query(spark, config, table_type, root, trigger)
    stop = root / STOP_FILE
    while not stop.exists():
        if query.exception() is not None:
            raise RuntimeError(str(query.exception()))
        progress = query.recentProgress
        _write_status(
            status,
            {
                "started": bool(progress),
                "batches_with_rows": sum(1 for p in progress if p["numInputRows"] > 0),
                "read": sum(p["numInputRows"] for p in progress),
            },
        )
        time.sleep(0.5)
    query.stop()
    reports = [json.loads(p.json) if hasattr(p, "json") else p for p in query.recentProgress]
    _write_status(status, {"done": True, "reports": reports})


def count(spark: SparkSession, root: Path, status: Path) -> None:
    table = spark.read.format("hudi").load(str(root / "table"))
    row = table.agg(
        F.count(F.lit(1)).alias("rows"), F.countDistinct("event_id").alias("events")
    ).first()
    _write_status(status, {"done": True, "rows": int(row["rows"]), "events": int(row["events"])})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m weir.bench.hudi_job")
    parser.add_argument("mode", choices=("drain", "live", "count"))
    parser.add_argument("--conf", required=True)
    parser.add_argument(
        "--table-type", required=True, action="append", choices=TABLE_TYPES, dest="table_types"
    )
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--status", required=True, type=Path)
    parser.add_argument("--hudi-jars", default=str(HUDI_JARS_DIR), type=Path)
    args = parser.parse_args()
    config = load_config(args.conf)
    builder = SparkSession.builder
    settings = hudi_session_settings(config, hudi_jars(config.spark.jars_dir, args.hudi_jars))
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.conf.set("spark.sql.streaming.numRecentProgressUpdates", "100000")
    try:
        if args.mode == "drain":
            drain(spark, config, args.table_types, args.root, args.status)
        elif args.mode == "live":
            live(spark, config, args.table_types[0], args.root / args.table_types[0], args.status)
        else:
            count(spark, args.root / args.table_types[0], args.status)
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
