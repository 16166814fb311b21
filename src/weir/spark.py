"""The one SparkSession builder, and every Spark setting Weir relies on, in one place.

Locally it points ``spark.jars`` at the folder ``make setup`` filled from Maven Central (nothing
is downloaded while a job runs); on EMR ``spark.jars_dir`` is null and the release image
provides Delta, Kafka and S3 support, so nothing extra is added.
"""

from __future__ import annotations

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


def spark_settings(config: WeirConfig) -> dict[str, str]:
    """Every Spark setting a Weir session gets, derived from config only (pure; tested)."""
    settings: dict[str, str] = {
        # Delta Lake as the table format and the session catalog.
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        # DESIGN.md §5: timestamps are UTC; the JVM default zone too, so nothing drifts.
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions": UTC_JAVA_OPTION,
        "spark.executor.extraJavaOptions": UTC_JAVA_OPTION,
        "spark.sql.shuffle.partitions": str(config.spark.shuffle_partitions),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        # The Kinesis connector and exactly-once writes need one task per shard/partition.
        "spark.speculation": "false",
        # Readers outside Spark (Athena, the deltalake package) expect plain Parquet timestamps.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        "spark.app.name": config.spark.app_name,
    }
    if config.spark.master:
        settings["spark.master"] = config.spark.master
    if config.spark.driver_memory:
        settings["spark.driver.memory"] = config.spark.driver_memory
    if config.spark.jars_dir:
        settings["spark.jars"] = ",".join(local_jars(config.spark.jars_dir))
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
    settings.update(config.spark.settings)
    return settings


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
