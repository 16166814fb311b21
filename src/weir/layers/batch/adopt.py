"""``--input``: adopting an existing lake of raw JSON-lines files (a Firehose delivery prefix).

Before a run, every file under the prefix not yet archived is appended to RAW as the files
source would have archived it, stamped with the file's modification time, with its quarantine
rows (docs/batch.md, "Adopting a lake"). Idempotent, keyed by file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.contract import classify_records, quarantine_rows
from weir.delta import add_missing_columns, read_table, table_version
from weir.lake import LakeLayout
from weir.layers.batch.transforms import adopted_records, unarchived_files
from weir.schemas import (
    QUARANTINE_PARTITION_COLUMNS,
    QUARANTINE_SCHEMA,
    RAW_PARTITION_COLUMNS,
    RAW_SCHEMA,
)
from weir.sources.files import FILES, LINE_SEPARATOR, landing_lines

log = logging.getLogger("weir.layers.batch")

ADOPT_METADATA_PREFIX = "weir-adopt "  # userMetadata of an adoption's RAW commit, + the prefix


def _files_under(spark: SparkSession, prefix: str) -> DataFrame:
    """Every file under ``prefix`` (recursively; Spark skips names starting with ``.``/``_``).

    The binaryFile source lists files and reads their content only when the ``content``
    column is selected: selecting metadata only costs a listing. Every name is taken, not just
    ``*.jsonl``: Firehose's object names have no extension (``.gz`` ones are decompressed).
    """
    return (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .load(prefix)
        .select(F.col("_metadata.file_path").alias("file_path"))
    )


def _archived_from(table: DataFrame, prefix: str) -> DataFrame:
    """Rows of RAW or QUARANTINE that the files source or an adoption took from ``prefix``."""
    return table.where((F.col("source") == FILES) & (F.col("source_stream") == prefix))


def input_exists(spark: SparkSession, uri: str) -> bool:
    """Whether ``uri`` names an existing folder or prefix, through Hadoop's file system."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return bool(path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).exists(path))


@dataclass(frozen=True)
class Adoption:
    """What :func:`adopt_files` appended: files, records (lines), quarantined records."""

    prefix: str
    files: int
    records: int
    quarantined: int
    raw_version: Optional[int]  # the RAW commit of the adoption; None when nothing was new


def adopt_files(spark: SparkSession, lake: LakeLayout, prefix: str) -> Adoption:
    """Archive into RAW every file under ``prefix`` not archived yet, with its quarantine rows.

    Idempotent, keyed by file: a file whose path under ``prefix`` is in RAW (source
    ``files``, source_stream ``prefix``) is neither read nor appended again, and all new files
    go to RAW in ONE commit, so a file is in RAW whole or not at all. The invalid lines are
    appended to QUARANTINE first, skipping rows already there: a run killed between the two
    commits re-adopts the same files next time and adds only what is missing, so
    count(raw) = count(valid) + count(quarantine) holds after any completed run.
    """
    # Tables written before RAW gained payload_bytes take it first (weir.delta).
    for path, schema, partitions in (
        (lake.raw, RAW_SCHEMA, RAW_PARTITION_COLUMNS),
        (lake.quarantine, QUARANTINE_SCHEMA, QUARANTINE_PARTITION_COLUMNS),
    ):
        if table_version(spark, path) is not None:
            add_missing_columns(spark, path, schema, partitions)
    raw = read_table(spark, lake.raw)
    archived = (
        spark.createDataFrame([], "source_partition STRING")
        if raw is None
        else _archived_from(raw, prefix).select("source_partition").distinct()
    )
    unarchived = unarchived_files(_files_under(spark, prefix), archived, prefix)
    paths = [row["file_path"] for row in unarchived.collect()]
    if not paths:
        log.info("batch: every file under %s is already in RAW", prefix)
        return Adoption(prefix, 0, 0, 0, None)
    # A line per row: a file of any size is read in splits, never whole (docs/batch.md).
    lines = landing_lines(spark.read.format("text").option("lineSep", LINE_SEPARATOR).load(paths))
    records = adopted_records(lines, prefix).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        count = records.count()
        quarantined = _append_quarantine_once(spark, lake, records, prefix)
        _append_adopted_raw(records, lake, prefix)
    finally:
        records.unpersist()
    version = table_version(spark, lake.raw)
    log.info(
        "batch: adopted %s files (%s records, %s quarantined) from %s in RAW version %s",
        len(paths),
        count,
        quarantined,
        prefix,
        version,
    )
    return Adoption(prefix, len(paths), count, quarantined, version)


def _append_adopted_raw(records: DataFrame, lake: LakeLayout, prefix: str) -> None:
    """One RAW commit, tagged with the prefix it adopted (seen in the table's history)."""
    (
        records.write.format("delta")
        .mode("append")
        .option("userMetadata", ADOPT_METADATA_PREFIX + prefix)
        .partitionBy(*RAW_PARTITION_COLUMNS)
        .save(lake.raw)
    )


def _append_quarantine_once(
    spark: SparkSession, lake: LakeLayout, records: DataFrame, prefix: str
) -> int:
    """Append the quarantine rows of ``records`` not already in QUARANTINE (by coordinates)."""
    rows = records.transform(classify_records).transform(quarantine_rows)
    existing = read_table(spark, lake.quarantine)
    if existing is not None:
        keys = _archived_from(existing, prefix).select("source_partition", "source_offset")
        rows = rows.join(keys, ["source_partition", "source_offset"], "left_anti").select(
            *QUARANTINE_SCHEMA.fieldNames()  # a join puts its keys first
        )
    rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        count = rows.count()
        if count:
            rows.write.format("delta").mode("append").partitionBy(
                *QUARANTINE_PARTITION_COLUMNS
            ).save(lake.quarantine)
    finally:
        rows.unpersist()
    return count
