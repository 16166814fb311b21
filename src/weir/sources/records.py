"""What every source shares: the micro-batch ingest time and the RAW column order."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from weir.schemas import RAW_SCHEMA


def with_ingest_time(records: DataFrame) -> DataFrame:
    """Add ``ingest_time`` (the micro-batch timestamp) and ``ingest_date``; RAW column order.

    In a streaming query ``current_timestamp()`` is one value per micro-batch, recorded in the
    offset log and reused when the batch is replayed, so replays produce identical rows.
    """
    stamped = records.withColumn("ingest_time", F.current_timestamp()).withColumn(
        "ingest_date", F.to_date(F.col("ingest_time"))
    )
    return stamped.select(
        *(F.col(f.name).cast(f.dataType).alias(f.name) for f in RAW_SCHEMA.fields)
    )
