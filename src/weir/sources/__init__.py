"""Streaming sources: each returns a streaming DataFrame of RAW rows (``weir.schemas.RAW_SCHEMA``).

Every source fills the same columns — source coordinates, the payload as text (and as bytes
when they are not UTF-8), the source's own timestamp — and stamps ``ingest_time`` with
``current_timestamp()``, which Structured Streaming pins to the micro-batch's timestamp. That
timestamp is stored in the query's offset log, so a micro-batch replayed after a crash carries
exactly the same ``ingest_time``: the raw archiver's idempotent writes and the classification
(``future_event`` compares with ``ingest_time``) give the same rows on every attempt.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from pyspark.sql import DataFrame, SparkSession

from weir.config import ConfigError, WeirConfig
from weir.errors import WeirError
from weir.lake import LakeLayout
from weir.sources.files import (
    FILES,
    files_reader_options,
    landing_line_options,
    landing_line_records,
    landing_line_source,
    landing_lines,
    landing_records,
    line_numbers,
    unnumbered_line_records,
)
from weir.sources.kafka import KAFKA, kafka_options, kafka_records, kafka_source
from weir.sources.records import decoded_payload, utf8_payload, with_ingest_time

KINESIS = "kinesis"
SOURCE_NAMES = (KAFKA, KINESIS, FILES)
# Spark Structured Streaming sources. Kinesis is not one locally: the awslabs connector is not
# on Maven Central, so weir.layers.streaming.kinesis archives it with a reader of its own.
SPARK_SOURCES = (KAFKA, FILES)


def check_source(config: WeirConfig, source: str) -> None:
    """Validate the source name and its configuration before anything runs (ConfigError)."""
    if source not in SOURCE_NAMES:
        raise ConfigError("--source", f"{source!r} is not one of {', '.join(SOURCE_NAMES)}")
    if source == KAFKA:
        kafka_options(config.sources.kafka)


def source_stream(config: WeirConfig, source: str) -> str:
    """What ``source`` writes into RAW's ``source_stream``: the topic, the Kinesis stream, or
    the landing folder."""
    check_source(config, source)
    if source == KAFKA:
        return config.sources.kafka.topic
    if source == KINESIS:
        return config.sources.kinesis.stream
    return LakeLayout.from_config(config).landing.rstrip("/")


def _spark_source(config: WeirConfig, source: str) -> None:
    check_source(config, source)
    if source not in SPARK_SOURCES:
        raise WeirError(
            f"the {source} source has no Spark streaming reader here; "
            "weir.layers.streaming.run_stream runs weir.layers.streaming.kinesis for it"
        )


def source_records(spark: SparkSession, config: WeirConfig, source: str) -> DataFrame:
    """The streaming DataFrame of RAW-shaped rows for ``source`` (kafka | files), one per record.

    For consumers of the records themselves (the speed layer): a landing file is read line by
    line, never whole, and its lines carry no line number (``source_offset`` null). The raw
    archiver, which records where every line came from, reads with :func:`archive_source`.
    """
    _spark_source(config, source)
    if source == KAFKA:
        return kafka_source(spark, config.sources.kafka)
    lake = LakeLayout.from_config(config)
    return unnumbered_line_records(
        landing_line_source(spark, lake, config.sources.files), lake.landing
    )


def archive_source(
    spark: SparkSession, config: WeirConfig, source: str
) -> tuple[DataFrame, Callable[[DataFrame], DataFrame]]:
    """The raw archiver's streaming DataFrame for ``source``, and the function that turns one
    of its micro-batches into RAW rows.

    Kafka's rows are RAW rows already. A landing file is read line by line in splits; a line's
    number in its file is known only across the whole micro-batch (a batch step), so the
    archiver numbers each batch's lines (``landing_line_records``) before it writes them.
    """
    _spark_source(config, source)
    if source == KAFKA:
        return kafka_source(spark, config.sources.kafka), _as_is
    lake = LakeLayout.from_config(config)
    lines = landing_line_source(spark, lake, config.sources.files)
    return lines, partial(landing_line_records, landing=lake.landing)


def _as_is(batch: DataFrame) -> DataFrame:
    return batch


__all__ = [
    "FILES",
    "KAFKA",
    "KINESIS",
    "SOURCE_NAMES",
    "SPARK_SOURCES",
    "archive_source",
    "check_source",
    "decoded_payload",
    "files_reader_options",
    "kafka_options",
    "kafka_records",
    "kafka_source",
    "landing_line_options",
    "landing_line_records",
    "landing_line_source",
    "landing_lines",
    "landing_records",
    "line_numbers",
    "source_records",
    "source_stream",
    "utf8_payload",
    "with_ingest_time",
]
