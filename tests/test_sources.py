"""Streaming sources (weir.sources): option builders (pure) and the RAW-row projections."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from pyspark.sql import SparkSession

from weir.config import ConfigError, FilesSourceConfig, KafkaSourceConfig, WeirConfig
from weir.errors import WeirError
from weir.schemas import RAW_SCHEMA
from weir.sources import (
    KINESIS,
    check_source,
    files_reader_options,
    kafka_options,
    kafka_records,
    landing_records,
    source_records,
    with_ingest_time,
)
from weir.sources.kafka import MSK_IAM_CALLBACK_HANDLER, MSK_IAM_JAAS_CONFIG

UTC = timezone.utc
LANDING = "file:///lake/landing/telemetry"


def kafka(**changes: object) -> KafkaSourceConfig:
    base = {"bootstrap_servers": "b1:9092,b2:9092", "topic": "telemetry"}
    return KafkaSourceConfig.model_validate({**base, **changes})


# --- Kafka options ----------------------------------------------------------------------------


def test_kafka_options_plaintext_defaults() -> None:
    assert kafka_options(kafka()) == {
        "kafka.bootstrap.servers": "b1:9092,b2:9092",
        "subscribe": "telemetry",
        "startingOffsets": "earliest",
        "failOnDataLoss": "true",
        "includeHeaders": "false",
        "kafka.security.protocol": "PLAINTEXT",
        "maxOffsetsPerTrigger": "500000",
        "kafka.max.poll.records": "10000",
        "kafka.max.partition.fetch.bytes": str(8 << 20),
        "kafka.fetch.max.bytes": str(64 << 20),
    }


def test_kafka_consumer_fetch_sizes_can_be_overridden() -> None:
    options = kafka_options(kafka(security={"options": {"max.poll.records": "500"}}))
    assert options["kafka.max.poll.records"] == "500"


def test_kafka_options_follow_the_config() -> None:
    options = kafka_options(
        kafka(starting_offsets="latest", fail_on_data_loss=False, max_offsets_per_trigger=None)
    )
    assert options["startingOffsets"] == "latest"
    assert options["failOnDataLoss"] == "false"
    assert "maxOffsetsPerTrigger" not in options


def test_msk_iam_sets_the_login_module_and_callback_handler() -> None:
    options = kafka_options(
        kafka(security={"protocol": "SASL_SSL", "sasl_mechanism": "AWS_MSK_IAM"})
    )
    assert options["kafka.security.protocol"] == "SASL_SSL"
    assert options["kafka.sasl.mechanism"] == "AWS_MSK_IAM"
    assert options["kafka.sasl.jaas.config"] == MSK_IAM_JAAS_CONFIG
    assert options["kafka.sasl.client.callback.handler.class"] == MSK_IAM_CALLBACK_HANDLER


def test_mutual_tls_passes_the_trust_and_key_stores_to_the_consumer() -> None:
    stores = {
        "ssl.truststore.location": "/etc/weir/kafka.truststore.jks",
        "ssl.truststore.password": "t",
        "ssl.keystore.location": "/etc/weir/kafka.keystore.jks",
        "ssl.keystore.password": "k",
    }
    options = kafka_options(kafka(security={"protocol": "SSL", "options": stores}))
    assert options["kafka.security.protocol"] == "SSL"
    assert {k: v for k, v in options.items() if k.startswith("kafka.ssl.")} == {
        f"kafka.{name}": value for name, value in stores.items()
    }
    assert not any(k.startswith("kafka.sasl.") for k in options)


def test_scram_takes_its_credentials_from_the_client_options() -> None:
    jaas = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="u";'
    options = kafka_options(
        kafka(
            security={
                "protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "options": {"sasl.jaas.config": jaas, "kafka.ssl.truststore.type": "PEM"},
            }
        )
    )
    assert options["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert options["kafka.sasl.jaas.config"] == jaas
    assert options["kafka.ssl.truststore.type"] == "PEM"


@pytest.mark.parametrize(
    ("security", "key"),
    [
        ({"protocol": "SASL_SSL"}, "sources.kafka.security.sasl_mechanism"),
        ({"protocol": "SSL", "sasl_mechanism": "PLAIN"}, "sources.kafka.security.sasl_mechanism"),
        ({"protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}, "sources.kafka.security.options"),
        (
            {"options": {"auto.offset.reset": "latest"}},
            "sources.kafka.security.options.auto.offset.reset",
        ),
        (
            {"options": {"kafka.bootstrap.servers": "x:1"}},
            "sources.kafka.security.options.kafka.bootstrap.servers",
        ),
    ],
)
def test_inconsistent_kafka_security_is_a_config_error_naming_the_key(
    security: dict, key: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        kafka_options(kafka(security=security))
    assert raised.value.key == key


def test_check_source_rejects_an_unknown_source(weir_config: WeirConfig) -> None:
    with pytest.raises(ConfigError) as raised:
        check_source(weir_config, "carrier-pigeon")
    assert raised.value.key == "--source"


def test_kinesis_has_no_spark_streaming_reader(
    spark: SparkSession, weir_config: WeirConfig
) -> None:
    # weir.layers.streaming.run_stream sends it to weir.layers.streaming.kinesis instead.
    with pytest.raises(WeirError, match="kinesis source has no Spark streaming reader"):
        source_records(spark, weir_config, KINESIS)


# --- Files ------------------------------------------------------------------------------------


def test_files_reader_options() -> None:
    options = files_reader_options(FilesSourceConfig(max_files_per_trigger=7))
    assert options["wholetext"] == "true"
    assert options["recursiveFileLookup"] == "true"
    assert options["pathGlobFilter"] == "*.jsonl"
    assert options["maxFilesPerTrigger"] == "7"


def landed(spark: SparkSession, files: dict[str, str]):
    modified = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    rows = [(text, path, modified) for path, text in files.items()]
    frame = spark.createDataFrame(
        rows, "value STRING, file_path STRING, file_modification_time TIMESTAMP"
    )
    return landing_records(frame, LANDING)


def coordinates(frame) -> list[tuple[str, str, str]]:
    return sorted(
        (r.source_partition, r.source_offset, r.payload)
        for r in frame.select("source_partition", "source_offset", "payload").collect()
    )


def test_every_line_is_a_record_numbered_from_one(spark: SparkSession) -> None:
    records = landed(spark, {"file:/lake/landing/telemetry/a.jsonl": '{"a":1}\n{"b":2}\n'})
    assert coordinates(records) == [("a.jsonl", "1", '{"a":1}'), ("a.jsonl", "2", '{"b":2}')]
    row = records.first()
    assert (row.source, row.source_stream, row.record_key) == ("files", LANDING, None)
    assert row.arrival_time == datetime(2026, 3, 1, 12, 0)


def test_blank_line_in_the_middle_is_kept_final_line_break_is_not_a_record(
    spark: SparkSession,
) -> None:
    records = landed(spark, {"file:/lake/landing/telemetry/a.jsonl": "x\n\ny\n"})
    assert coordinates(records) == [
        ("a.jsonl", "1", "x"),
        ("a.jsonl", "2", ""),
        ("a.jsonl", "3", "y"),
    ]


def test_last_line_without_line_break_and_crlf_endings(spark: SparkSession) -> None:
    records = landed(spark, {"file:/lake/landing/telemetry/a.jsonl": "x\r\ny"})
    assert coordinates(records) == [("a.jsonl", "1", "x"), ("a.jsonl", "2", "y")]


def test_trailing_blank_lines_before_the_final_break_are_records(spark: SparkSession) -> None:
    records = landed(spark, {"file:/lake/landing/telemetry/a.jsonl": "x\n\n\n"})
    assert coordinates(records) == [
        ("a.jsonl", "1", "x"),
        ("a.jsonl", "2", ""),
        ("a.jsonl", "3", ""),
    ]


def test_empty_file_has_no_records(spark: SparkSession) -> None:
    assert landed(spark, {"file:/lake/landing/telemetry/empty.jsonl": ""}).count() == 0


def test_partition_is_the_path_inside_the_landing_folder(spark: SparkSession) -> None:
    records = landed(
        spark,
        {
            "file:/lake/landing/telemetry/2026/03/01/b.jsonl": "x\n",
            "s3://elsewhere/c.jsonl": "y\n",
        },
    )
    assert coordinates(records) == [
        ("2026/03/01/b.jsonl", "1", "x"),
        ("s3://elsewhere/c.jsonl", "1", "y"),
    ]


# --- Kafka rows and the RAW shape -------------------------------------------------------------


def test_kafka_rows_keep_topic_partition_offset_key_and_timestamp(spark: SparkSession) -> None:
    stamp = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    messages = spark.createDataFrame(
        [(b"dev-1", b'{"event_id":"e1"}', "telemetry", 3, 1234567890123, stamp)],
        "key BINARY, value BINARY, topic STRING, partition INT, offset BIGINT, timestamp TIMESTAMP",
    )
    row = kafka_records(messages).first()
    assert row.asDict() == {
        "source": "kafka",
        "source_stream": "telemetry",
        "source_partition": "3",
        "source_offset": "1234567890123",
        "record_key": "dev-1",
        "payload": '{"event_id":"e1"}',
        "arrival_time": datetime(2026, 3, 1, 12, 0),
    }


def test_with_ingest_time_gives_the_raw_schema(spark: SparkSession) -> None:
    records = with_ingest_time(landed(spark, {"file:/lake/landing/telemetry/a.jsonl": "x\n"}))
    assert [(f.name, f.dataType) for f in records.schema.fields] == [
        (f.name, f.dataType) for f in RAW_SCHEMA.fields
    ]
    row = records.first()
    assert row.ingest_date == row.ingest_time.date()
