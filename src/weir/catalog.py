"""The catalog: Weir's Delta tables by name, for Spark SQL, Athena and QuickSight.

Two kinds, chosen by ``catalog.kind`` (docs/serving.md):

* ``spark`` (local): external Delta tables in the persistent Hive metastore that
  :func:`weir.spark.metastore_settings` configures (Derby under ``infra.state_dir``), so a new
  SparkSession in another process (a notebook, ``spark-sql``) finds ``weir.telemetry_minute``.
* ``glue`` (AWS): a Glue database and one Glue table per Weir table, in the shape Athena reads
  as a Delta table (``table_type=DELTA``: Athena takes the schema and the files from the
  Delta log at query time; the Glue columns are what the console, Lake Formation and
  QuickSight's field list show). The Glue endpoint comes from config (moto locally).

Both are idempotent: a second sync changes nothing; a moved lake updates the locations.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlparse

from pyspark.sql import SparkSession
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    ByteType,
    DataType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
    ShortType,
    StringType,
    StructType,
    TimestampNTZType,
    TimestampType,
)

from weir.config import WeirConfig
from weir.delta import table_version
from weir.errors import WeirError
from weir.lake import LakeLayout
from weir.schemas import (
    DQ_RESULTS_SCHEMA,
    MINUTE_PARTITION_COLUMNS,
    MINUTE_SCHEMA,
    QUARANTINE_PARTITION_COLUMNS,
    QUARANTINE_SCHEMA,
    RAW_PARTITION_COLUMNS,
    RAW_SCHEMA,
)

log = logging.getLogger(__name__)

KIND_SPARK = "spark"
KIND_GLUE = "glue"

# What Athena and Spark-on-Glue (EMR) expect of a Delta table in the Glue Data Catalog:
# table_type=DELTA makes Athena read the Delta log; spark.sql.sources.provider=delta plus the
# SerDe's ``path`` make Spark with Glue as its metastore read it as a Delta data source.
GLUE_TABLE_TYPE = "EXTERNAL_TABLE"
GLUE_DELTA_PARAMETERS = {
    "classification": "delta",
    "table_type": "DELTA",
    "EXTERNAL": "TRUE",
    "spark.sql.sources.provider": "delta",
}
PARQUET_INPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"

_HIVE_ATOMIC_TYPES: dict[type, str] = {
    StringType: "string",
    BooleanType: "boolean",
    ByteType: "tinyint",
    ShortType: "smallint",
    IntegerType: "int",
    LongType: "bigint",
    FloatType: "float",
    DoubleType: "double",
    DateType: "date",
    TimestampType: "timestamp",
    TimestampNTZType: "timestamp",
    BinaryType: "binary",
}


@dataclass(frozen=True)
class CatalogTable:
    """One Weir table as the catalog knows it: its name, where it lives, its columns.

    ``schema`` None: no schema is declared in ``weir.schemas`` yet; the Spark catalog takes
    it from the Delta log, Glue (which needs columns) skips the table.
    """

    name: str
    location: str
    schema: Optional[StructType]
    partition_columns: tuple[str, ...] = ()
    description: str = ""


def catalog_tables(lake: LakeLayout) -> list[CatalogTable]:
    """The tables Weir publishes in the catalog, in the order they are registered."""
    return [
        CatalogTable(
            "telemetry_minute",
            lake.serving,
            MINUTE_SCHEMA,
            MINUTE_PARTITION_COLUMNS,
            "Unified per device-minute view: BATCH up to the horizon, SPEED beyond",
        ),
        CatalogTable(
            "raw_telemetry",
            lake.raw,
            RAW_SCHEMA,
            RAW_PARTITION_COLUMNS,
            "Every received record as received, with its source coordinates",
        ),
        CatalogTable(
            "quarantine_telemetry",
            lake.quarantine,
            QUARANTINE_SCHEMA,
            QUARANTINE_PARTITION_COLUMNS,
            "Invalid records with the first reason that applies",
        ),
        CatalogTable(
            "dq_results",
            lake.dq_results,
            DQ_RESULTS_SCHEMA,
            (),
            "One row per data-quality expectation per run (weir dq run)",
        ),
    ]


# --- Types and Glue table definitions (pure) ----------------------------------------------------


def hive_type(data_type: DataType) -> str:
    """The Hive/Glue type name of a Spark type (what Athena and the Glue console show)."""
    atomic = _HIVE_ATOMIC_TYPES.get(type(data_type))
    if atomic is not None:
        return atomic
    if isinstance(data_type, DecimalType):
        return f"decimal({data_type.precision},{data_type.scale})"
    if isinstance(data_type, ArrayType):
        return f"array<{hive_type(data_type.elementType)}>"
    if isinstance(data_type, MapType):
        return f"map<{hive_type(data_type.keyType)},{hive_type(data_type.valueType)}>"
    if isinstance(data_type, StructType):
        fields = ",".join(f"{f.name}:{hive_type(f.dataType)}" for f in data_type.fields)
        return f"struct<{fields}>"
    raise ValueError(f"no Hive type for Spark type {data_type.simpleString()}")


def athena_location(location: str) -> str:
    """The location as Glue and Athena spell it: ``s3://`` (not ``s3a://``), ending in ``/``."""
    if location.startswith("s3a://"):
        location = "s3://" + location[len("s3a://") :]
    return location.rstrip("/") + "/"


def glue_table_input(table: CatalogTable) -> dict[str, Any]:
    """The Glue ``TableInput`` of a Weir Delta table (pure; tested field by field)."""
    if table.schema is None:
        raise ValueError(f"{table.name}: no declared schema, so no Glue columns")
    location = athena_location(table.location)

    def columns(names: Iterable[str]) -> list[dict[str, str]]:
        return [{"Name": name, "Type": hive_type(table.schema[name].dataType)} for name in names]

    data_columns = [n for n in table.schema.fieldNames() if n not in table.partition_columns]
    return {
        "Name": table.name,
        "Description": table.description,
        "TableType": GLUE_TABLE_TYPE,
        "Parameters": dict(GLUE_DELTA_PARAMETERS),
        "PartitionKeys": columns(table.partition_columns),
        "StorageDescriptor": {
            "Columns": columns(data_columns),
            "Location": location,
            "InputFormat": PARQUET_INPUT_FORMAT,
            "OutputFormat": PARQUET_OUTPUT_FORMAT,
            "Compressed": False,
            "SerdeInfo": {
                "SerializationLibrary": PARQUET_SERDE,
                "Parameters": {"serialization.format": "1", "path": location},
            },
        },
    }


def athena_ddl(database: str, tables: Iterable[CatalogTable]) -> str:
    """Athena DDL for the tables: LOCATION and ``table_type`` only, as Athena requires of Delta.

    Athena refuses column lists and other properties on a Delta table: it reads both the
    schema and the partitioning from the Delta log.
    """
    statements = [f"CREATE DATABASE IF NOT EXISTS {database};"]
    for table in tables:
        location = athena_location(table.location)
        note = "" if location.startswith("s3://") else "-- not on S3: Athena cannot read it\n"
        statements.append(
            f"{note}CREATE EXTERNAL TABLE IF NOT EXISTS {database}.{table.name}\n"
            f"LOCATION '{location}'\n"
            "TBLPROPERTIES ('table_type'='DELTA');"
        )
    return "\n\n".join(statements) + "\n"


def glue_drift(
    table: CatalogTable, actual: StructType, actual_partitions: Sequence[str]
) -> list[str]:
    """How the Glue definition of ``table`` would misdescribe the Delta table it points at.

    Glue's columns come from the declared schema (``weir.schemas``); Athena and Trino read the
    Delta log instead, so a table whose log says otherwise (a column added by a schema
    evolution, a changed type, another partitioning) would be queried correctly but listed
    wrongly by the Glue console, Lake Formation and QuickSight. [] when they agree (names,
    Hive types and partition columns; nullability is not Glue's).
    """
    if table.schema is None:
        return []

    def types(schema: StructType) -> dict[str, str]:
        found = {}
        for f in schema.fields:
            try:
                found[f.name] = hive_type(f.dataType)
            except ValueError:
                found[f.name] = f.dataType.simpleString() + " (no Hive type)"
        return found

    declared, found = types(table.schema), types(actual)
    problems = [
        f"column {name} {kind} is in the Delta table but not declared (Glue would not list it)"
        for name, kind in found.items()
        if name not in declared
    ]
    problems += [
        f"column {name} is declared but not in the Delta table (Glue would list it)"
        for name in declared
        if name not in found
    ]
    problems += [
        f"column {name} is {found[name]} in the Delta table but declared {kind}"
        for name, kind in declared.items()
        if name in found and found[name] != kind
    ]
    if tuple(actual_partitions) != tuple(table.partition_columns):
        problems.append(
            f"partitioned by ({', '.join(actual_partitions)}) in the Delta table but declared "
            f"({', '.join(table.partition_columns)})"
        )
    return problems


def check_glue_describes_lake(
    spark: SparkSession, database: str, tables: Iterable[CatalogTable]
) -> None:
    """Raise WeirError, naming every difference, if a Glue definition would misdescribe its
    table's Delta log; tables not written yet are not checked (Athena finds nothing there)."""
    from delta.tables import DeltaTable

    problems = []
    for table in tables:
        if table.schema is None or table_version(spark, table.location) is None:
            continue
        delta = DeltaTable.forPath(spark, table.location)
        partitions = delta.detail().select("partitionColumns").first()[0]
        for problem in glue_drift(table, delta.toDF().schema, list(partitions)):
            problems.append(f"{database}.{table.name}: {problem}")
    if problems:
        raise WeirError(
            "catalog: the Glue definitions would not describe the lake's Delta tables, so "
            "nothing was written to Glue:\n"
            + "\n".join(f"  {line}" for line in problems)
            + "\nDeclare the table's real schema in weir.schemas (or repair the table), then "
            "sync again."
        )


# --- Sync -----------------------------------------------------------------------------------------


def sync_catalog(spark: SparkSession, config: WeirConfig) -> list[str]:
    """Create or update Weir's tables in the configured catalog; the qualified names registered.

    Idempotent. ``catalog.kind`` spark: the tables whose location holds a Delta table
    (others are skipped: a Delta table needs a log to take its schema from). glue: every
    table with a declared schema (Athena reads the log at query time, so an empty location
    is fine), after checking that each declared schema still describes its Delta table
    (:func:`check_glue_describes_lake`; WeirError and no Glue write if not).
    """
    tables = catalog_tables(LakeLayout.from_config(config))
    database = config.catalog.database
    if config.catalog.kind == KIND_GLUE:
        if _reads_lake_as_configured(spark, config):
            check_glue_describes_lake(spark, database, tables)
        else:
            log.warning(
                "catalog: schemas not compared with the lake: this session reads S3 through "
                "another endpoint than aws.endpoint_url"
            )
        return sync_glue(config, database, tables)
    return sync_spark_catalog(spark, database, tables)


def _reads_lake_as_configured(spark: SparkSession, config: WeirConfig) -> bool:
    """Whether ``spark`` reaches an S3 lake at the endpoint ``config`` names (a session built
    from another config, as in tests, would retry a dead endpoint for minutes).

    Asks the Hadoop configuration S3A reads (the bucket's own endpoint, else the default),
    not the session's ``spark.hadoop.*`` settings: a later ``getOrCreate`` with another
    config changes those, but not the file system's endpoint."""
    root = LakeLayout.from_config(config).root
    if not root.startswith(("s3://", "s3a://")):
        return True
    wanted = config.aws.endpoint_url
    if not wanted:
        return True
    bucket = urlparse(root).netloc
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    used = hadoop.get(f"fs.s3a.bucket.{bucket}.endpoint") or hadoop.get("fs.s3a.endpoint")
    return used == wanted


def sync_spark_catalog(
    spark: SparkSession, database: str, tables: Iterable[CatalogTable]
) -> list[str]:
    """External Delta tables in the session's (Hive) metastore, one per existing table."""
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {database}")
    registered = []
    for table in tables:
        qualified = f"{database}.{table.name}"
        if table_version(spark, table.location) is None:
            log.info("catalog: %s skipped: no Delta table at %s yet", qualified, table.location)
            continue
        current = _registered_location(spark, qualified)
        if current is not None and _same_location(current, table.location):
            action = "unchanged"
        else:
            if current is not None:
                # The lake moved: re-point the entry. DROP of an EXTERNAL table removes the
                # metastore entry only, never the files.
                spark.sql(f"DROP TABLE {qualified}")
            spark.sql(
                f"CREATE TABLE IF NOT EXISTS {qualified} USING DELTA "
                f"LOCATION '{_sql_text(table.location)}'"
            )
            action = "created" if current is None else f"moved from {current}"
        log.info("catalog: %s -> %s (%s)", qualified, table.location, action)
        registered.append(qualified)
    return registered


def _registered_location(spark: SparkSession, qualified: str) -> Optional[str]:
    """The location of an external table in the metastore; None when there is none."""
    if not spark.catalog.tableExists(qualified):
        return None
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {qualified}").collect()
    details = {row["col_name"]: row["data_type"] for row in rows}
    if details.get("Type", "").upper() != "EXTERNAL":
        raise WeirError(
            f"catalog: {qualified} exists as a {details.get('Type', 'non-external')} table, "
            "not an external Delta table over the lake; drop it (its data is not Weir's) "
            "and sync again"
        )
    return details.get("Location")


def _same_location(registered: str, wanted: str) -> bool:
    def plain(uri: str) -> str:
        return uri.replace("file:///", "/").replace("file:/", "/").rstrip("/")

    return plain(registered) == plain(wanted)


def _sql_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def sync_glue(config: WeirConfig, database: str, tables: Iterable[CatalogTable]) -> list[str]:
    """A Glue database and one Athena-readable Delta table per declared table (create or update)."""
    from weir.aws import aws_client

    glue = aws_client(config, "glue")
    try:
        glue.get_database(Name=database)
    except glue.exceptions.EntityNotFoundException:
        glue.create_database(
            DatabaseInput={"Name": database, "Description": "Weir telemetry (Delta Lake)"}
        )
        log.info("catalog: Glue database %s created", database)
    registered = []
    for table in tables:
        qualified = f"{database}.{table.name}"
        if table.schema is None:
            log.info("catalog: %s skipped: no declared schema for Glue columns", qualified)
            continue
        wanted = glue_table_input(table)
        try:
            current = glue.get_table(DatabaseName=database, Name=table.name)["Table"]
        except glue.exceptions.EntityNotFoundException:
            glue.create_table(DatabaseName=database, TableInput=wanted)
            action = "created"
        else:
            if _glue_matches(current, wanted):
                action = "unchanged"
            else:
                glue.update_table(DatabaseName=database, TableInput=wanted)
                action = "updated"
        log.info(
            "catalog: %s -> %s (Glue, %s)",
            qualified,
            wanted["StorageDescriptor"]["Location"],
            action,
        )
        registered.append(qualified)
    return registered


def _glue_matches(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a Glue table already says everything ``wanted`` says (extra keys are Glue's)."""

    def covers(have: Any, want: Any) -> bool:
        if isinstance(want, dict):
            return isinstance(have, dict) and all(covers(have.get(k), v) for k, v in want.items())
        if isinstance(want, list):
            return (
                isinstance(have, list)
                and len(have) == len(want)
                and all(covers(h, w) for h, w in zip(have, want))
            )
        return have == want

    return covers(current, wanted)


__all__ = [
    "CatalogTable",
    "athena_ddl",
    "athena_location",
    "catalog_tables",
    "check_glue_describes_lake",
    "glue_drift",
    "glue_table_input",
    "hive_type",
    "sync_catalog",
    "sync_glue",
    "sync_spark_catalog",
]
