"""The files source: JSON-lines files in the landing folder (a Firehose delivery prefix on AWS).

Every record keeps its file and 1-based line number as source coordinates (partition = the
file's path inside the landing folder, offset = line number). Lines end with LF or CRLF. The
empty string after a final line break is not a record; a blank line in the middle is one (it
is quarantined as ``malformed_json``, never dropped silently). A line's bytes are kept exactly:
one that is not UTF-8 is in RAW's ``payload_bytes`` (docs/contract.md). A UTF-8 byte-order mark
at the very start of a file marks the file's encoding and is not part of its first line
(Hadoop's line reader drops it; the whole-file reader does the same); anywhere else it is.

Files are read line by line, in splits side by side, never whole (docs/streaming.md, "Files"):

* ``landing_line_source`` streams the lines; ``landing_line_records`` turns a micro-batch of
  them into RAW rows. Line numbers come from each split's position in its file, which takes
  an aggregate over the lines read: a batch step (a batch read, or a streaming micro-batch in
  the archiver's ``foreachBatch``). ``--input`` adoption reads the same way.
* ``unnumbered_line_records``: the same rows without line numbers, per row, for the speed
  layer (it needs the records, not where they sit).
* ``landing_records`` maps whole files (one Spark row each, ``wholetext``) to the same RAW
  rows: the plain reference the line reader is tested against.

Only ``*.jsonl`` files are streamed, in sub-folders too. Names starting with ``.`` or ``_``
are ignored by Spark: writers land a temporary name and rename it when complete.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from weir.config import FilesSourceConfig
from weir.lake import LakeLayout
from weir.sources.records import as_raw_rows, utf8_payload

FILES = "files"
LANDING_GLOB = "*.jsonl"
LINE_BREAK = r"\r?\n"
# Spark ignores a new file whose modification time is older than (newest file seen - maxFileAge);
# the default (7 days) would silently skip back-filled files that kept an old mtime.
LANDING_MAX_FILE_AGE = "3650d"
# The line reader splits on LF only (Hadoop's default would also split on a lone CR); a CR
# before the LF is removed afterwards, as in the whole-file reader.
LINE_SEPARATOR = "\n"
# Latin-1 maps each byte to one character and back: the whole-file reader splits a file's
# bytes into lines in that form, so each line keeps its bytes (splitting the file as UTF-8
# text would replace the invalid ones before they could be kept).
_BYTES_AS_TEXT = "ISO-8859-1"
_BYTE_ORDER_MARK_AS_TEXT = "\u00ef\u00bb\u00bf"  # EF BB BF, read as Latin-1


def files_reader_options(files: FilesSourceConfig) -> dict[str, str]:
    """Options of Spark's text source for the landing folder, a whole file per row (pure)."""
    return {**_landing_options(files), "wholetext": "true"}


def landing_line_options(files: FilesSourceConfig) -> dict[str, str]:
    """Options of Spark's text source for the landing folder, a line per row (pure)."""
    return {**_landing_options(files), "lineSep": LINE_SEPARATOR}


def _landing_options(files: FilesSourceConfig) -> dict[str, str]:
    return {
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


def _coordinates(landing: str, line_number: Column, line_bytes: Column) -> list[Column]:
    """The RAW columns of one line (all but the ingest time), from its file's columns."""
    payload, payload_bytes = utf8_payload(line_bytes)
    return [
        F.lit(FILES).alias("source"),
        F.lit(landing.rstrip("/")).alias("source_stream"),
        F.coalesce(relative_to(F.col("file_path"), landing), F.col("file_path")).alias(
            "source_partition"
        ),
        line_number.cast("string").alias("source_offset"),
        F.lit(None).cast("string").alias("record_key"),
        payload.alias("payload"),
        F.col("file_modification_time").alias("arrival_time"),
        payload_bytes.alias("payload_bytes"),
    ]


# --- a whole file per row ----------------------------------------------------------------------


def landing_records(files: DataFrame, landing: str) -> DataFrame:
    """RAW rows (without ingest time) from whole files: one row per line.

    Input columns: ``value`` (the file's text), ``file_path``, ``file_modification_time``.
    Pure: usable on a static DataFrame in tests.
    """
    file_text = F.decode(F.col("value").cast("binary"), _BYTES_AS_TEXT)
    as_text = F.when(
        file_text.startswith(_BYTE_ORDER_MARK_AS_TEXT),
        file_text.substr(F.lit(len(_BYTE_ORDER_MARK_AS_TEXT) + 1), F.length(file_text)),
    ).otherwise(file_text)
    lines = files.select(
        F.col("file_path"),
        F.col("file_modification_time"),
        F.posexplode(F.split(as_text, LINE_BREAK, -1)).alias("position", "line"),
        F.size(F.split(as_text, LINE_BREAK, -1)).alias("line_count"),
    )
    is_final_empty = (F.col("position") == F.col("line_count") - 1) & (F.col("line") == "")
    return lines.where(~is_final_empty).select(
        *_coordinates(landing, F.col("position") + 1, F.encode(F.col("line"), _BYTES_AS_TEXT))
    )


# --- a line per row ---------------------------------------------------------------------------


def landing_lines(text: DataFrame) -> DataFrame:
    """The lines of a line-mode text read (batch or streaming): ``value`` and where it is.

    ``file_block_start`` is the byte where the line's split of the file starts: Spark reads a
    large file in splits, in parallel, and a line belongs to the split it starts in.
    """
    return text.select(
        F.col("value"),
        F.col("_metadata.file_path").alias("file_path"),
        F.col("_metadata.file_block_start").alias("file_block_start"),
        F.col("_metadata.file_modification_time").alias("file_modification_time"),
    )


def landing_line_source(
    spark: SparkSession, lake: LakeLayout, files: FilesSourceConfig
) -> DataFrame:
    """Streaming lines of the landing folder, stamped with the micro-batch's ingest time.

    Not yet RAW rows: each micro-batch goes through ``landing_line_records`` (in
    ``foreachBatch``), which numbers the lines.
    """
    text = spark.readStream.format("text").options(**landing_line_options(files)).load(lake.landing)
    return (
        landing_lines(text)
        .withColumn("ingest_time", F.current_timestamp())
        .withColumn("ingest_date", F.to_date(F.col("ingest_time")))
    )


def line_numbers(lines: DataFrame) -> DataFrame:
    """``lines`` with ``line_number``: the 1-based number of each line in its file.

    Within a task a split's lines come in file order, one after another, so a line's number is
    its row position after its split's first row, plus the lines of the file's earlier splits.
    Positions are ``monotonically_increasing_id`` (deterministic for the same files and
    settings); the per-split first positions and counts are a small aggregate, joined back by
    broadcast. A batch step: it reads ``lines`` twice (persist them to read the files once).
    """
    positioned = lines.withColumn("_position", F.monotonically_increasing_id())
    split = ["file_path", "file_block_start"]
    earlier_splits = Window.partitionBy("file_path").orderBy("file_block_start")
    splits = (
        positioned.groupBy(*split)
        .agg(F.min("_position").alias("_first"), F.count(F.lit(1)).alias("_lines"))
        .select(
            *split,
            "_first",
            (F.sum("_lines").over(earlier_splits) - F.col("_lines")).alias("_lines_before"),
        )
    )
    numbered = positioned.join(F.broadcast(splits), split)
    line_number = F.col("_lines_before") + F.col("_position") - F.col("_first") + 1
    return numbered.withColumn("line_number", line_number).drop(
        "_position", "_first", "_lines_before"
    )


def _line_bytes() -> Column:
    """A line's bytes without the CR of a CRLF line end."""
    raw_bytes = F.col("value").cast("binary")
    return F.when(
        F.col("value").endswith("\r"), raw_bytes.substr(F.lit(1), F.octet_length("value") - 1)
    ).otherwise(raw_bytes)


def unnumbered_line_records(lines: DataFrame, landing: str) -> DataFrame:
    """RAW-shaped rows from landing lines, without their line numbers (``source_offset`` null).

    Per row, so usable in any streaming plan: for consumers that need the records but not
    their place in the file (the speed layer). The archiver numbers them
    (``landing_line_records``).
    """
    rows = lines.select(
        *_coordinates(landing, F.lit(None), _line_bytes()),
        F.col("ingest_time"),
        F.col("ingest_date"),
    )
    return as_raw_rows(rows)


def landing_line_records(lines: DataFrame, landing: str) -> DataFrame:
    """RAW rows (RAW_SCHEMA) from landing lines stamped with ``ingest_time`` and ``ingest_date``.

    Input columns: those of ``landing_lines``, ``ingest_time`` and ``ingest_date``. The same
    rows as ``landing_records`` gives for the same files, without a file ever read whole.
    """
    rows = line_numbers(lines).select(
        *_coordinates(landing, F.col("line_number"), _line_bytes()),
        F.col("ingest_time"),
        F.col("ingest_date"),
    )
    return as_raw_rows(rows)
