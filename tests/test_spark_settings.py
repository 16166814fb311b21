"""Every Spark setting comes from config through `weir.spark.spark_settings` (a pure function),
and the live session built from it runs in UTC with Delta Lake working."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytest
import yaml
from pyspark.sql import DataFrame, SparkSession

from weir.config import WeirConfig, config_from_mapping, load_config
from weir.spark import SCHEDULER_POOL_PROPERTY, SPEED_POOL, scheduler_pool, spark_settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
JARS_DIR = PROJECT_ROOT / ".jars" / "spark"
UTC_OPTION = "-Duser.timezone=UTC"


def local(**spark: Any) -> WeirConfig:
    document = yaml.safe_load((PROJECT_ROOT / "conf" / "local.yaml").read_text("utf-8"))
    document["spark"].update({"jars_dir": str(JARS_DIR), **spark})
    return config_from_mapping(document, environ={})


def emr() -> WeirConfig:
    return load_config(str(PROJECT_ROOT / "conf" / "emr.yaml"), environ={"WEIR_BUCKET": "acme"})


def with_aws(config: WeirConfig, **aws: Any) -> WeirConfig:
    document = config.model_dump()
    document["aws"].update(aws)
    return config_from_mapping(document, environ={})


@pytest.fixture(scope="module")
def local_settings() -> dict[str, str]:
    return spark_settings(local())


@pytest.fixture(scope="module")
def emr_settings() -> dict[str, str]:
    return spark_settings(emr())


@pytest.mark.parametrize("env", ["local", "emr"])
def test_delta_is_the_table_format_and_session_catalog(env: str, request: Any) -> None:
    settings = request.getfixturevalue(f"{env}_settings")
    assert settings["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert (
        settings["spark.sql.catalog.spark_catalog"]
        == "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    )


@pytest.mark.parametrize("env", ["local", "emr"])
def test_session_and_jvm_run_in_utc(env: str, request: Any) -> None:
    settings = request.getfixturevalue(f"{env}_settings")
    assert settings["spark.sql.session.timeZone"] == "UTC"
    assert UTC_OPTION in settings["spark.driver.extraJavaOptions"].split()
    assert UTC_OPTION in settings["spark.executor.extraJavaOptions"].split()


@pytest.mark.parametrize("partitions", [1, 4, 400])
def test_shuffle_partitions_come_from_config(partitions: int) -> None:
    settings = spark_settings(local(shuffle_partitions=partitions))
    assert settings["spark.sql.shuffle.partitions"] == str(partitions)


def test_every_value_is_a_string(local_settings: dict[str, str]) -> None:
    assert {
        key: type(value) for key, value in local_settings.items() if type(value) is not str
    } == {}


def test_in_local_mode_the_jars_dir_is_exactly_the_driver_class_path(
    local_settings: dict[str, str],
) -> None:
    """Not spark.jars: local mode's executor would copy every jar into a temp folder per JVM."""
    jars = local_settings["spark.driver.extraClassPath"].split(":")
    assert sorted(jars) == sorted(str(p) for p in JARS_DIR.glob("*.jar"))
    assert all(Path(jar).is_absolute() for jar in jars)
    assert any(Path(jar).name.startswith("delta-spark_2.12-") for jar in jars)
    assert "spark.jars" not in local_settings


@pytest.mark.parametrize("master", ["spark://10.0.0.1:7077", "yarn", None])
def test_executors_in_other_jvms_get_the_jars_dir_shipped(master: str | None) -> None:
    settings = spark_settings(local(master=master))
    assert sorted(settings["spark.jars"].split(",")) == sorted(
        str(p) for p in JARS_DIR.glob("*.jar")
    )
    assert "spark.driver.extraClassPath" not in settings


def test_emr_adds_no_jars_no_master_and_no_local_endpoint(emr_settings: dict[str, str]) -> None:
    """On EMR the release image brings Delta, Kafka and S3A; spark-submit picks the master."""
    assert "spark.jars" not in emr_settings
    assert "spark.master" not in emr_settings
    assert "spark.driver.memory" not in emr_settings
    # No endpoint, no credentials: only the server-side encryption conf/emr.yaml asks for.
    s3 = {key for key in emr_settings if key.startswith("spark.hadoop.fs.s3")}
    assert not [key for key in s3 if "encryption" not in key.lower()]


def test_emr_sessions_use_glue_the_dynamodb_log_store_and_encryption_as_configured(
    emr_settings: dict[str, str],
) -> None:
    # One place for every setting: a notebook on EMR Studio gets what a submitted job gets.
    assert emr_settings["spark.hadoop.hive.metastore.client.factory.class"].endswith(
        "AWSGlueDataCatalogHiveClientFactory"
    )
    assert emr_settings["spark.hadoop.fs.s3.enableServerSideEncryption"] == "true"
    assert emr_settings["spark.hadoop.fs.s3a.encryption.algorithm"] in ("AES256", "SSE-KMS")
    assert emr_settings["spark.delta.logStore.s3.impl"] == "io.delta.storage.S3DynamoDBLogStore"


def test_local_master_and_driver_memory_come_from_config(local_settings: dict[str, str]) -> None:
    assert local_settings["spark.master"] == "local[2]"
    assert local_settings["spark.driver.memory"] == "4g"


def test_local_endpoint_routes_s3_through_s3a(local_settings: dict[str, str]) -> None:
    assert local_settings["spark.hadoop.fs.s3.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert local_settings["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:5055"
    assert local_settings["spark.hadoop.fs.s3a.endpoint.region"] == "us-east-1"
    assert local_settings["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert local_settings["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert local_settings["spark.hadoop.fs.s3a.access.key"] == "testing"


def test_https_endpoint_turns_ssl_on() -> None:
    config = with_aws(local(), endpoint_url="https://s3.internal:9000")
    assert spark_settings(config)["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"


def test_no_endpoint_no_s3a_settings_even_with_keys() -> None:
    settings = spark_settings(with_aws(local(), endpoint_url=None))
    assert "spark.hadoop.fs.s3a.endpoint" not in settings
    assert "spark.hadoop.fs.s3.impl" not in settings


def test_static_keys_only_when_both_halves_are_set() -> None:
    settings = spark_settings(with_aws(local(), secret_access_key=None))
    assert not [key for key in settings if key.startswith("spark.hadoop.fs.s3a.access")]
    assert "spark.hadoop.fs.s3a.aws.credentials.provider" not in settings


def test_user_settings_are_applied_last() -> None:
    config = local(
        shuffle_partitions=4,
        settings={
            "spark.sql.shuffle.partitions": "9",
            "spark.hadoop.fs.s3a.path.style.access": "false",
            "spark.ui.enabled": "false",
        },
    )
    settings = spark_settings(config)
    assert settings["spark.sql.shuffle.partitions"] == "9"
    assert settings["spark.hadoop.fs.s3a.path.style.access"] == "false"
    assert settings["spark.ui.enabled"] == "false"


# --- the live session (the session fixture of tests/conftest.py) ----------------------------


def test_live_session_carries_the_settings(spark: SparkSession, weir_config: WeirConfig) -> None:
    expected = spark_settings(weir_config)
    for key in (
        "spark.sql.extensions",
        "spark.sql.catalog.spark_catalog",
        "spark.sql.session.timeZone",
        "spark.sql.shuffle.partitions",
    ):
        assert spark.conf.get(key) == expected[key], key
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"


def test_live_jvm_default_zone_is_utc(spark: SparkSession) -> None:
    """Code that falls back to the JVM zone (java.time, Hadoop, connectors) sees UTC too."""
    assert spark.sparkContext._jvm.java.util.TimeZone.getDefault().getID() == "UTC"


def test_live_timestamps_are_read_as_utc(spark: SparkSession) -> None:
    row = spark.sql("SELECT unix_timestamp(TIMESTAMP'2024-01-01 00:00:00') AS s").first()
    assert row["s"] == 1_704_067_200


def test_live_delta_write_and_read(spark: SparkSession, tmp_path: Path) -> None:
    path = str(tmp_path / "tiny")
    rows = [("vehicle-001", 1), ("vehicle-002", 2)]
    spark.createDataFrame(rows, "device_id STRING, n INT").write.format("delta").save(path)

    back = spark.read.format("delta").load(path)
    assert sorted(tuple(r) for r in back.collect()) == rows
    # The SQL extension is live: Delta's own commands and path identifiers work.
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").select("operation").collect()
    assert [r["operation"] for r in history] == ["WRITE"]


@pytest.mark.parametrize("env", ["local", "emr"])
def test_the_codegen_cache_outlasts_a_streaming_drivers_cycle_of_plans(
    env: str, request: Any
) -> None:
    # Spark's default (100) evicted and recompiled ~12 classes/s under a running stream.
    settings = request.getfixturevalue(f"{env}_settings")
    assert int(settings["spark.sql.codegen.cache.maxEntries"]) >= 1000


@pytest.mark.parametrize("env", ["local", "emr"])
def test_jobs_are_scheduled_first_come_first_served_unless_configured(
    env: str, request: Any
) -> None:
    # FAIR pools for the stream's queries are opt-in (spark.settings): no measured gain.
    settings = request.getfixturevalue(f"{env}_settings")
    assert "spark.scheduler.mode" not in settings
    assert "spark.scheduler.allocation.file" not in settings


def test_a_streaming_query_runs_its_batches_in_the_pool_it_was_started_in(
    spark: SparkSession, tmp_path: Path
) -> None:
    """The query's thread copies the local properties of the thread that starts it, and its
    foreachBatch runs there: how `weir stream` puts each query's jobs in its own pool."""
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "lines.txt").write_text("a\nb\n", "utf-8")
    seen: list[Optional[str]] = []

    def record_pool(batch: DataFrame, batch_id: int) -> None:
        batch.count()  # a job of this batch
        seen.append(batch.sparkSession.sparkContext.getLocalProperty(SCHEDULER_POOL_PROPERTY))

    with scheduler_pool(spark, SPEED_POOL):
        query = (
            spark.readStream.text(str(landing))
            .writeStream.foreachBatch(record_pool)
            .option("checkpointLocation", str(tmp_path / "checkpoint"))
            .trigger(availableNow=True)
            .start()
        )
    assert spark.sparkContext.getLocalProperty(SCHEDULER_POOL_PROPERTY) is None  # restored
    try:
        assert query.awaitTermination(120)
    finally:
        query.stop()
    assert seen and set(seen) == {SPEED_POOL}
