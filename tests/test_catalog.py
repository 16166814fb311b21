"""The catalog (docs/serving.md, "Catalog"): Weir's tables by name in Spark's metastore and Glue.

The Spark-catalog test runs `weir catalog sync` and the query in two fresh processes: embedded
Derby admits one JVM at a time, and the point is that the entry outlives the process that
made it. The Glue test talks to the moto server of the shared ``local_infra`` stack.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
import yaml
from pyspark.sql import SparkSession
from pyspark.sql.types import (
    ArrayType,
    DateType,
    DecimalType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from weir.catalog import (
    GLUE_DELTA_PARAMETERS,
    PARQUET_INPUT_FORMAT,
    PARQUET_OUTPUT_FORMAT,
    PARQUET_SERDE,
    CatalogTable,
    athena_ddl,
    athena_location,
    catalog_tables,
    glue_table_input,
    hive_type,
    sync_catalog,
)
from weir.catalog import _reads_lake_as_configured as reads_lake_as_configured
from weir.cli import main
from weir.config import WeirConfig
from weir.errors import EXIT_OK
from weir.lake import LakeLayout
from weir.schemas import LAYER_BATCH, MINUTE_PARTITION_COLUMNS, MINUTE_SCHEMA

S3_LAKE = LakeLayout(root="s3a://weir-lake/prod")


def with_catalog(config: WeirConfig, lake_root: str, kind: str, **infra: str) -> WeirConfig:
    """``config`` with the lake at ``lake_root``, catalog ``kind`` and ``infra`` patched."""
    return config.model_copy(
        update={
            "lake": config.lake.model_copy(update={"root": lake_root}),
            "catalog": config.catalog.model_copy(update={"kind": kind}),
            "infra": config.infra.model_copy(update=infra),
        }
    )


def minute_row(device: str) -> tuple:
    start = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
    end = start.replace(minute=1)
    return (device, start, end, date(2026, 3, 1), 3, 20.0, 19.0, 21.0, 50.0, 80.0, 10.0, 12.0,
            52.5, 13.25, "ok", LAYER_BATCH, end)  # fmt: skip


# --- Pure parts: types, Glue table definitions, Athena DDL -------------------------------------


def test_hive_types_of_spark_types() -> None:
    assert hive_type(StringType()) == "string"
    assert hive_type(LongType()) == "bigint"
    assert hive_type(TimestampType()) == "timestamp"
    assert hive_type(DateType()) == "date"
    assert hive_type(DecimalType(12, 3)) == "decimal(12,3)"
    assert hive_type(ArrayType(DateType())) == "array<date>"
    assert hive_type(MapType(StringType(), LongType())) == "map<string,bigint>"
    nested = StructType([StructField("a", LongType()), StructField("b", ArrayType(StringType()))])
    assert hive_type(nested) == "struct<a:bigint,b:array<string>>"


def test_glue_and_athena_spell_s3_locations_with_s3_and_a_trailing_slash() -> None:
    assert athena_location("s3a://b/p/serving/telemetry_minute") == (
        "s3://b/p/serving/telemetry_minute/"
    )
    assert athena_location("s3://b/p/raw/telemetry/") == "s3://b/p/raw/telemetry/"


def test_glue_table_is_an_athena_delta_table_with_real_columns_and_partition_keys() -> None:
    (serving,) = [t for t in catalog_tables(S3_LAKE) if t.name == "telemetry_minute"]
    table = glue_table_input(serving)

    assert (table["Name"], table["TableType"]) == ("telemetry_minute", "EXTERNAL_TABLE")
    assert table["Parameters"] == {
        "classification": "delta",
        "table_type": "DELTA",
        "EXTERNAL": "TRUE",
        "spark.sql.sources.provider": "delta",
    }
    assert table["PartitionKeys"] == [{"Name": "event_date", "Type": "date"}]
    storage = table["StorageDescriptor"]
    columns = [(c["Name"], c["Type"]) for c in storage["Columns"]]
    assert columns[:5] == [
        ("device_id", "string"),
        ("window_start", "timestamp"),
        ("window_end", "timestamp"),
        ("event_count", "bigint"),
        ("temperature_c_avg", "double"),
    ]
    assert [name for name, _ in columns] == [
        n for n in MINUTE_SCHEMA.fieldNames() if n not in MINUTE_PARTITION_COLUMNS
    ]
    assert storage["Location"] == "s3://weir-lake/prod/serving/telemetry_minute/"
    assert (storage["InputFormat"], storage["OutputFormat"]) == (
        PARQUET_INPUT_FORMAT,
        PARQUET_OUTPUT_FORMAT,
    )
    assert storage["SerdeInfo"] == {
        "SerializationLibrary": PARQUET_SERDE,
        "Parameters": {
            "serialization.format": "1",
            "path": "s3://weir-lake/prod/serving/telemetry_minute/",
        },
    }


def test_every_published_table_has_a_glue_definition_and_one_without_a_schema_has_none() -> None:
    for table in catalog_tables(S3_LAKE):
        assert glue_table_input(table)["StorageDescriptor"]["Columns"], table.name
    undeclared = CatalogTable("scratch", f"{S3_LAKE.root}/scratch", None)
    with pytest.raises(ValueError, match="no declared schema"):
        glue_table_input(undeclared)


def test_athena_ddl_gives_location_and_table_type_only_for_every_table() -> None:
    ddl = athena_ddl("weir", catalog_tables(S3_LAKE))

    assert ddl.startswith("CREATE DATABASE IF NOT EXISTS weir;\n")
    assert (
        "CREATE EXTERNAL TABLE IF NOT EXISTS weir.telemetry_minute\n"
        "LOCATION 's3://weir-lake/prod/serving/telemetry_minute/'\n"
        "TBLPROPERTIES ('table_type'='DELTA');"
    ) in ddl
    for name in ("raw_telemetry", "quarantine_telemetry", "dq_results"):
        assert f"CREATE EXTERNAL TABLE IF NOT EXISTS weir.{name}\n" in ddl
    assert "not on S3" not in ddl
    # Athena reads columns and partitions from the Delta log and refuses them in the DDL.
    assert "PARTITIONED BY" not in ddl and "device_id" not in ddl


def test_athena_ddl_marks_a_local_lake_as_unreadable_by_athena() -> None:
    ddl = athena_ddl("weir", catalog_tables(LakeLayout(root="file:///tmp/lake")))
    assert "-- not on S3: Athena cannot read it\nCREATE EXTERNAL TABLE" in ddl


def test_weir_catalog_ddl_prints_the_ddl(
    weir_config: WeirConfig, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = with_catalog(weir_config, "s3://weir-lake/prod", "glue")
    conf = tmp_path / "weir.yaml"
    conf.write_text(yaml.safe_dump(config.model_dump()), "utf-8")

    assert main(["catalog", "ddl", "--conf", str(conf)]) == EXIT_OK
    assert capsys.readouterr().out == athena_ddl(
        "weir", catalog_tables(LakeLayout.from_config(config))
    )


# --- Spark catalog: a persistent metastore, seen from a new process ------------------------------

# `weir catalog sync` twice in one process: one JVM and one Derby boot fewer than two runs.
SYNC_TWICE = textwrap.dedent(
    """
    import sys
    from weir.cli import main

    codes = [main(["catalog", "sync", "--conf", sys.argv[1]]) for _ in range(2)]
    sys.exit(max(codes))
    """
)
QUERY_BY_NAME = textwrap.dedent(
    """
    import sys
    from weir.config import load_config
    from weir.spark import build_session

    spark = build_session(load_config(sys.argv[1]), app_name="weir-catalog-reader")
    rows = spark.sql("SELECT device_id FROM weir.telemetry_minute ORDER BY device_id").collect()
    print("DEVICES", ",".join(r.device_id for r in rows))
    print("TABLES", ",".join(sorted(t.name for t in spark.catalog.listTables("weir"))))
    """
)


def test_spark_catalog_sync_registers_tables_a_new_session_in_another_process_reads_by_name(
    spark: SparkSession, weir_config: WeirConfig, tmp_path: Path
) -> None:
    lake = LakeLayout(root=f"file://{tmp_path}/lake")
    spark.createDataFrame([minute_row("veh-1"), minute_row("veh-2")], MINUTE_SCHEMA).write.format(
        "delta"
    ).partitionBy(*MINUTE_PARTITION_COLUMNS).save(lake.serving)
    config = with_catalog(weir_config, lake.root, "spark", state_dir=str(tmp_path / "state"))
    conf = tmp_path / "weir.yaml"
    conf.write_text(yaml.safe_dump(config.model_dump()), "utf-8")

    def weir(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=tmp_path
        )

    synced = weir("-c", SYNC_TWICE, str(conf))
    read = weir("-c", QUERY_BY_NAME, str(conf))

    assert synced.returncode == EXIT_OK, synced.stderr
    # Only the serving table exists in this lake: the others are skipped, not created. The
    # second sync finds the entry in place.
    assert synced.stdout.count("1 tables registered\n  weir.telemetry_minute") == 2
    assert "(unchanged)" in synced.stderr

    assert read.returncode == 0, read.stderr
    assert "DEVICES veh-1,veh-2" in read.stdout
    assert "TABLES telemetry_minute" in read.stdout
    assert (tmp_path / "state" / "metastore_db").is_dir()
    assert not list(tmp_path.glob("lake/raw*"))  # a missing table is not created


# --- Glue (moto) ---------------------------------------------------------------------------------


def test_the_lake_is_read_for_the_schema_check_only_at_the_endpoint_s3a_uses(
    spark: SparkSession, weir_config: WeirConfig
) -> None:
    # The session reads S3 at conf/local.yaml's endpoint. A command run in it with another
    # config sets that config's spark.hadoop.* settings (getOrCreate), but S3A still uses the
    # first endpoint: reading the lake would retry a dead endpoint for minutes.
    elsewhere = "http://127.0.0.1:1"
    config = with_catalog(weir_config, "s3://weir-lake/prod", "glue")
    config = config.model_copy(
        update={"aws": config.aws.model_copy(update={"endpoint_url": elsewhere})}
    )
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    setting = "spark.hadoop.fs.s3a.endpoint"
    previous = spark.conf.get(setting, None)
    spark.conf.set(setting, elsewhere)
    try:
        assert not reads_lake_as_configured(spark, config)
        hadoop.set("fs.s3a.bucket.weir-lake.endpoint", elsewhere)  # the bucket's own endpoint
        assert reads_lake_as_configured(spark, config)
    finally:
        hadoop.unset("fs.s3a.bucket.weir-lake.endpoint")
        if previous is None:
            spark.conf.unset(setting)
        else:
            spark.conf.set(setting, previous)


@pytest.mark.slow
def test_glue_sync_creates_athena_delta_tables_and_a_second_sync_changes_nothing(
    spark: SparkSession, local_infra: WeirConfig
) -> None:
    from weir.aws import aws_client

    database = f"weir_{uuid.uuid4().hex[:8]}"
    config = with_catalog(local_infra, "s3://weir-lake/prod", "glue")
    config = config.model_copy(
        update={"catalog": config.catalog.model_copy(update={"database": database})}
    )
    glue = aws_client(config, "glue")

    registered = sync_catalog(spark, config)

    assert registered == [
        f"{database}.telemetry_minute",
        f"{database}.raw_telemetry",
        f"{database}.quarantine_telemetry",
        f"{database}.dq_results",
    ]
    table = glue.get_table(DatabaseName=database, Name="telemetry_minute")["Table"]
    assert table["DatabaseName"] == database
    assert table["TableType"] == "EXTERNAL_TABLE"
    assert table["Parameters"] == GLUE_DELTA_PARAMETERS
    assert table["PartitionKeys"] == [{"Name": "event_date", "Type": "date"}]
    storage = table["StorageDescriptor"]
    assert storage["Location"] == "s3://weir-lake/prod/serving/telemetry_minute/"
    assert [c["Name"] for c in storage["Columns"]] == [
        n for n in MINUTE_SCHEMA.fieldNames() if n != "event_date"
    ]
    assert {c["Name"]: c["Type"] for c in storage["Columns"]}["computed_at"] == "timestamp"
    assert storage["InputFormat"] == PARQUET_INPUT_FORMAT
    assert storage["OutputFormat"] == PARQUET_OUTPUT_FORMAT
    assert storage["SerdeInfo"]["SerializationLibrary"] == PARQUET_SERDE
    assert storage["SerdeInfo"]["Parameters"]["path"] == storage["Location"]
    raw = glue.get_table(DatabaseName=database, Name="raw_telemetry")["Table"]
    assert raw["PartitionKeys"] == [{"Name": "ingest_date", "Type": "date"}]
    assert raw["StorageDescriptor"]["Location"] == "s3://weir-lake/prod/raw/telemetry/"

    # Idempotent: a second sync makes no new table version; a moved lake updates in place.
    def version() -> str:
        return glue.get_table(DatabaseName=database, Name="telemetry_minute")["Table"]["VersionId"]

    before = version()
    assert sync_catalog(spark, config) == registered
    assert version() == before
    moved = with_catalog(config, "s3://weir-lake/v2", "glue")
    sync_catalog(spark, moved)
    table = glue.get_table(DatabaseName=database, Name="telemetry_minute")["Table"]
    assert table["StorageDescriptor"]["Location"] == "s3://weir-lake/v2/serving/telemetry_minute/"
    assert version() != before
    assert len(glue.get_tables(DatabaseName=database)["TableList"]) == len(registered)
