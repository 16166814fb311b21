"""What every source shares: a record's bytes as RAW's payload columns, the micro-batch ingest
time and the RAW column order."""

from __future__ import annotations

from typing import Optional

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from weir.schemas import RAW_SCHEMA

REPLACEMENT_CHARACTER = "\ufffd"


def utf8_payload(data: Column) -> tuple[Column, Column]:
    """RAW's ``payload`` and ``payload_bytes`` for a record's bytes (a binary column).

    ``payload`` is the bytes decoded as UTF-8, each invalid sequence replaced by U+FFFD, so
    RAW's text is always valid UTF-8; ``payload_bytes`` is the bytes themselves when they are
    not valid UTF-8, and null otherwise (docs/contract.md: such a record is malformed_json and
    RAW keeps what arrived). The decoder inserts U+FFFD only for invalid input, so a text
    without one came from valid bytes; a text with one is re-encoded and compared, to tell a
    U+FFFD the producer sent from a replacement.
    """
    text = F.decode(data, "UTF-8")
    not_utf8 = text.contains(REPLACEMENT_CHARACTER) & (F.encode(text, "UTF-8") != data)
    return text, F.when(not_utf8, data)


def decoded_payload(data: Optional[bytes]) -> tuple[Optional[str], Optional[bytes]]:
    """``utf8_payload`` for bytes in Python (sources read on the driver): (text, bytes or None)."""
    if data is None:
        return None, None
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), bytes(data)


def with_ingest_time(records: DataFrame) -> DataFrame:
    """Add ``ingest_time`` (the micro-batch timestamp) and ``ingest_date``; RAW column order.

    In a streaming query ``current_timestamp()`` is one value per micro-batch, recorded in the
    offset log and reused when the batch is replayed, so replays produce identical rows.
    """
    stamped = records.withColumn("ingest_time", F.current_timestamp()).withColumn(
        "ingest_date", F.to_date(F.col("ingest_time"))
    )
    return as_raw_rows(stamped)


def as_raw_rows(records: DataFrame) -> DataFrame:
    """The RAW_SCHEMA columns of ``records``, in RAW's order and types."""
    return records.select(
        *(F.col(f.name).cast(f.dataType).alias(f.name) for f in RAW_SCHEMA.fields)
    )
