"""The one SparkSession builder, and every Spark setting Weir relies on, in one place.

Locally it puts the jars ``make setup`` resolved from Maven Central on the driver's class path
(nothing is downloaded while a job runs); on EMR ``spark.jars_dir`` is null and the release
image provides Delta, Kafka and S3 support, so nothing extra is added.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import SparkSession

from weir.config import ConfigError, WeirConfig

UTC_JAVA_OPTION = "-Duser.timezone=UTC"


def local_jars(jars_dir: str) -> list[str]:
    """The jars in ``jars_dir``, sorted; a clear error if set-up has not filled it."""
    folder = Path(jars_dir)
    jars = sorted(str(p) for p in folder.glob("*.jar")) if folder.is_dir() else []
    if not jars:
        raise ConfigError(
            "spark.jars_dir",
            f"no jars in {jars_dir}; run `make setup` to resolve them from Maven Central",
        )
    return jars


CODEGEN_CACHE_ENTRIES = 2000
# Scheduler pools of `weir stream`'s two queries (weir.layers.streaming.queries). Spark's
# default FIFO scheduling ignores them; with `spark.scheduler.mode: FAIR` in spark.settings
# each query's jobs get an equal share of the task slots whatever the other has queued. Not the
# default: it did not make SPEED fresher where measured (docs/streaming.md, "Two triggers,
# two pools").
SCHEDULER_POOL_PROPERTY = "spark.scheduler.pool"
SPEED_POOL = "weir-speed"
ARCHIVE_POOL = "weir-archive"
GLUE_CLIENT_FACTORY = "com.amazonaws.glue.catalog.metastore.AWSGlueDataCatalogHiveClientFactory"
DYNAMODB_LOG_STORE = "io.delta.storage.S3DynamoDBLogStore"
# S3A's names of the encryption methods (Hadoop 3.3's S3AEncryptionMethods).
_S3A_ALGORITHMS = {"SSE-S3": "AES256", "SSE-KMS": "SSE-KMS"}


def spark_settings(config: WeirConfig) -> dict[str, str]:
    """Every Spark setting a Weir session gets, derived from config only (pure; tested)."""
    settings: dict[str, str] = {
        # Delta Lake as the table format and the session catalog.
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        # Timestamps are stored as UTC (docs/contract.md); the JVM default zone too, so nothing
        # drifts.
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions": UTC_JAVA_OPTION,
        "spark.executor.extraJavaOptions": UTC_JAVA_OPTION,
        "spark.sql.shuffle.partitions": str(config.spark.shuffle_partitions),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        # The Kinesis connector and exactly-once writes need one task per shard/partition.
        "spark.speculation": "false",
        # Streaming state (the speed layer's dedup keys and open minute windows) in RocksDB:
        # off the JVM heap, so a large state adds no GC pressure; changelog checkpointing
        # uploads only what changed per micro-batch. A checkpoint keeps the provider it began with.
        "spark.sql.streaming.stateStore.providerClass": (
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
        ),
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        # Readers outside Spark (Athena, the deltalake package) expect plain Parquet timestamps.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # Every MERGE source Weir passes is already persisted and deterministic (a speed
        # micro-batch's windows, the serving diff of pinned versions): Delta's own copy of it
        # would be one more job and write per MERGE.
        "spark.databricks.delta.merge.materializeSource": "none",
        # A streaming driver cycles through more generated classes per trigger (two queries,
        # Delta's commit and snapshot plans, the merge) than Spark's 100-entry codegen cache
        # holds: it kept evicting and recompiling them (Janino on the driver, then the JIT),
        # which lengthened every micro-batch (docs/streaming.md, "Local settings").
        "spark.sql.codegen.cache.maxEntries": str(CODEGEN_CACHE_ENTRIES),
        "spark.app.name": config.spark.app_name,
    }
    if config.spark.master:
        settings["spark.master"] = config.spark.master
    if config.spark.driver_memory:
        settings["spark.driver.memory"] = config.spark.driver_memory
    if config.spark.jars_dir:
        settings.update(jar_settings(local_jars(config.spark.jars_dir), config.spark.master))
    if config.aws.endpoint_url:
        # A local S3 endpoint (moto) through hadoop-aws: s3:// and s3a:// both go to S3A.
        endpoint = config.aws.endpoint_url
        settings.update(
            {
                "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
                "spark.hadoop.fs.s3a.endpoint": endpoint,
                "spark.hadoop.fs.s3a.endpoint.region": config.aws.region,
                "spark.hadoop.fs.s3a.path.style.access": "true",
                "spark.hadoop.fs.s3a.connection.ssl.enabled": str(
                    endpoint.startswith("https://")
                ).lower(),
            }
        )
    if config.aws.access_key_id and config.aws.secret_access_key:
        settings.update(
            {
                "spark.hadoop.fs.s3a.aws.credentials.provider": (
                    "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
                ),
                "spark.hadoop.fs.s3a.access.key": config.aws.access_key_id,
                "spark.hadoop.fs.s3a.secret.key": config.aws.secret_access_key,
            }
        )
    if config.catalog.kind == "spark":
        settings.update(metastore_settings(config))
    else:
        settings.update(glue_catalog_settings())
    settings.update(log_store_settings(config))
    settings.update(s3_encryption_settings(config))
    settings.update(config.spark.settings)
    return settings


def jar_settings(jars: list[str], master: str | None) -> dict[str, str]:
    """How a session gets the jars of ``spark.jars_dir``.

    In local mode the executor is the driver's JVM, so the jars go on the driver's class path
    when the JVM starts. ``spark.jars`` would make that executor fetch a copy of every jar
    (280 MB, most of it the AWS SDK bundle) into a temporary folder at its first task: seconds
    on every job's start, and a copy left behind by every JVM killed with -9. On a cluster
    master the executors are elsewhere and need ``spark.jars`` to ship them.
    """
    if master is not None and (master == "local" or master.startswith("local[")):
        return {"spark.driver.extraClassPath": os.pathsep.join(jars)}
    return {"spark.jars": ",".join(jars)}


def glue_catalog_settings() -> dict[str, str]:
    """The AWS Glue Data Catalog as Spark's metastore (``catalog.kind: glue``).

    The Glue client is the EMR release's; a local session with this catalog kind writes and
    reads tables by path only, and `weir catalog sync` talks to Glue through boto3.
    """
    return {
        "spark.sql.catalogImplementation": "hive",
        "spark.hadoop.hive.metastore.client.factory.class": GLUE_CLIENT_FACTORY,
    }


def log_store_settings(config: WeirConfig) -> dict[str, str]:
    """Delta's S3 multi-cluster writes: commits to s3:// and s3a:// tables go through the
    DynamoDB table ``emr.delta_lock_table`` (docs/deploy.md says which tables need it)."""
    table = config.emr.delta_lock_table
    if not table:
        return {}
    prefix = f"spark.io.delta.storage.{DYNAMODB_LOG_STORE.rsplit('.', 1)[-1]}"
    return {
        "spark.delta.logStore.s3.impl": DYNAMODB_LOG_STORE,
        "spark.delta.logStore.s3a.impl": DYNAMODB_LOG_STORE,
        f"{prefix}.ddb.tableName": table,
        f"{prefix}.ddb.region": config.aws.region,
    }


def s3_encryption_settings(config: WeirConfig) -> dict[str, str]:
    """Server-side encryption of every object a job writes: EMRFS (s3://) and S3A (s3a://),
    as ``emr.s3_encryption`` says."""
    encryption = config.emr.s3_encryption
    if encryption is None:
        return {}
    settings = {
        "spark.hadoop.fs.s3.enableServerSideEncryption": "true",
        "spark.hadoop.fs.s3a.encryption.algorithm": _S3A_ALGORITHMS[encryption],
    }
    if encryption == "SSE-KMS":
        key = str(config.emr.s3_kms_key_id)
        settings["spark.hadoop.fs.s3.serverSideEncryption.kms.keyId"] = key
        settings["spark.hadoop.fs.s3a.encryption.key"] = key
    return settings


def metastore_settings(config: WeirConfig) -> dict[str, str]:
    """The local Spark catalog (``catalog.kind: spark``): a persistent Hive metastore.

    An embedded Derby database at ``<infra.state_dir>/metastore_db`` and a warehouse folder
    beside it, so a new session in another process (a notebook, ``spark-sql``) finds the
    tables `weir catalog sync` registered. Embedded Derby admits one JVM at a time: a session
    opens it only when it first touches the catalog (docs/serving.md). ``derby.log`` goes to
    the state folder too, not the working directory. The pyspark wheel ships the Hive jars.
    """
    state_dir = Path(config.infra.state_dir)
    return {
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(state_dir / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": (
            f"jdbc:derby:;databaseName={state_dir / 'metastore_db'};create=true"
        ),
        "spark.driver.extraJavaOptions": (
            f"{UTC_JAVA_OPTION} -Dderby.system.home={shlex.quote(str(state_dir))}"
        ),
    }


@contextmanager
def scheduler_pool(spark: SparkSession, pool: str | None) -> Iterator[None]:
    """Jobs started by this thread, and by threads it starts meanwhile (a streaming query's
    thread copies the local properties of the thread that starts it), go to ``pool``."""
    context = spark.sparkContext
    previous = context.getLocalProperty(SCHEDULER_POOL_PROPERTY)
    context.setLocalProperty(SCHEDULER_POOL_PROPERTY, pool)  # type: ignore[arg-type]
    try:
        yield
    finally:
        context.setLocalProperty(SCHEDULER_POOL_PROPERTY, previous)  # type: ignore[arg-type]


def build_session(config: WeirConfig, app_name: str | None = None) -> SparkSession:
    """The SparkSession for a Weir job or notebook (get-or-create: one per process)."""
    builder = SparkSession.builder
    for key, value in spark_settings(config).items():
        builder = builder.config(key, value)
    if app_name:
        builder = builder.appName(app_name)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
