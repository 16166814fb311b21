"""The files source: JSON-lines files in the landing folder (a Firehose delivery prefix on AWS).

Each file is read whole (``wholetext``) and split into lines, so every record keeps its file
and 1-based line number as source coordinates (partition = the file's path inside the landing
folder, offset = line number). Lines end with LF or CRLF. The empty string after a final line
break is not a record; a blank line in the middle is one (it is quarantined as
``malformed_json``, never dropped silently).

Only ``*.jsonl`` files are read, in sub-folders too. Names starting with ``.`` or ``_`` are
ignored by Spark: writers land a temporary name and rename it when complete.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.config import FilesSourceConfig
from weir.lake import LakeLayout
from weir.sources.records import with_ingest_time

FILES = "files"
LANDING_GLOB = "*.jsonl"
LINE_BREAK = r"\r?\n"
# Spark ignores a new file whose modification time is older than (newest file seen - maxFileAge);
# the default (7 days) would silently skip back-filled files that kept an old mtime.
LANDING_MAX_FILE_AGE = "3650d"


def files_reader_options(files: FilesSourceConfig) -> dict[str, str]:
    """Options of Spark's text source for the landing folder (pure)."""
    return {
        "wholetext": "true",
        "recursiveFileLookup": "true",
        "pathGlobFilter": LANDING_GLOB,
        "maxFilesPerTrigger": str(files.max_files_per_trigger),
        "maxFileAge": LANDING_MAX_FILE_AGE,
    }


def _spark_uri(folder: str) -> str:
    """A folder URI the way Spark prints file paths (``file:/x`` for ``file:///x``)."""
    folder = folder.rstrip("/")
    if folder.startswith("file:///"):
        return "file:/" + folder[len("file:///") :]
    return folder


def relative_to(path: Column, folder: str) -> Column:
    """A file's path under ``folder`` (the files source's key of a file), null outside it."""
    prefix = _spark_uri(folder) + "/"
    return F.when(path.startswith(prefix), path.substr(F.lit(len(prefix) + 1), F.length(path)))


def landing_records(files: DataFrame, landing: str) -> DataFrame:
    """RAW rows (without ingest time) from whole files: one row per line.

    Input columns: ``value`` (the file's text), ``file_path``, ``file_modification_time``.
    Pure: usable on a static DataFrame in tests.
    """
    lines = files.select(
        F.col("file_path"),
        F.col("file_modification_time"),
        F.posexplode(F.split(F.col("value"), LINE_BREAK, -1)).alias("position", "line"),
        F.size(F.split(F.col("value"), LINE_BREAK, -1)).alias("line_count"),
    )
    is_final_empty = (F.col("position") == F.col("line_count") - 1) & (F.col("line") == "")
    return lines.where(~is_final_empty).select(
        F.lit(FILES).alias("source"),
        F.lit(landing.rstrip("/")).alias("source_stream"),
        F.coalesce(relative_to(F.col("file_path"), landing), F.col("file_path")).alias(
            "source_partition"
        ),
        (F.col("position") + 1).cast("string").alias("source_offset"),
        F.lit(None).cast("string").alias("record_key"),
        F.col("line").alias("payload"),
        F.col("file_modification_time").alias("arrival_time"),
    )


def files_source(spark: SparkSession, lake: LakeLayout, files: FilesSourceConfig) -> DataFrame:
    """Streaming RAW rows from the landing folder (``LakeLayout.landing``)."""
    whole_files = (
        spark.readStream.format("text")
        .options(**files_reader_options(files))
        .load(lake.landing)
        .select(
            F.col("value"),
            F.col("_metadata.file_path").alias("file_path"),
            F.col("_metadata.file_modification_time").alias("file_modification_time"),
        )
    )
    return with_ingest_time(landing_records(whole_files, lake.landing))
