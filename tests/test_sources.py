"""Streaming sources (weir.sources): option builders (pure) and the RAW-row projections."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from contract.builders import event_payload
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.config import ConfigError, FilesSourceConfig, KafkaSourceConfig, WeirConfig
from weir.contract import REASON_COLUMN, classify_records
from weir.contract.rules import Reason
from weir.errors import WeirError
from weir.lake import LakeLayout
from weir.schemas import RAW_SCHEMA
from weir.sources import (
    KINESIS,
    check_source,
    decoded_payload,
    files_reader_options,
    kafka_options,
    kafka_records,
    landing_line_options,
    landing_line_records,
    landing_line_source,
    landing_lines,
    landing_records,
    source_records,
    utf8_payload,
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


def test_line_reader_splits_on_line_feed_only() -> None:
    options = landing_line_options(FilesSourceConfig(max_files_per_trigger=7))
    assert options["lineSep"] == "\n"  # Hadoop's default also breaks a line at a lone CR
    assert "wholetext" not in options
    assert options["maxFilesPerTrigger"] == "7"


def landed(spark: SparkSession, files: dict[str, str | bytes]) -> DataFrame:
    """The whole-file reader's RAW rows for files given as text or as bytes."""
    modified = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    rows = [
        (text if isinstance(text, bytes) else text.encode(), path, modified)
        for path, text in files.items()
    ]
    frame = spark.createDataFrame(
        rows, "data BINARY, file_path STRING, file_modification_time TIMESTAMP"
    )
    # The text source hands over a file's bytes as they are, valid UTF-8 or not.
    as_read = frame.select(F.col("data").cast("string").alias("value"), "*").drop("data")
    return landing_records(as_read, LANDING)


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

KAFKA_MESSAGE = (
    "key BINARY, value BINARY, topic STRING, partition INT, offset BIGINT, timestamp TIMESTAMP"
)


def test_kafka_rows_keep_topic_partition_offset_key_and_timestamp(spark: SparkSession) -> None:
    stamp = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    messages = spark.createDataFrame(
        [(b"dev-1", b'{"event_id":"e1"}', "telemetry", 3, 1234567890123, stamp)], KAFKA_MESSAGE
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
        "payload_bytes": None,
    }


def test_kafka_value_not_utf8_or_null_is_kept_and_quarantined_as_malformed_json(
    spark: SparkSession,
) -> None:
    stamp = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    not_utf8 = b'{"event_id":"e\xff","device_id":"d","event_time":"2026-03-01T11:59:00Z"}'
    values = [not_utf8, None]  # None: a tombstone (a record with a null value)
    messages = spark.createDataFrame(
        [(None, value, "telemetry", 0, n, stamp) for n, value in enumerate(values)],
        KAFKA_MESSAGE,
    )
    raw = with_ingest_time(kafka_records(messages))

    rows = raw.transform(classify_records).orderBy("source_offset").collect()

    assert [row["payload"] for row in rows] == [not_utf8.decode("utf-8", "replace"), None]
    assert [row["payload_bytes"] for row in rows] == [bytearray(not_utf8), None]
    assert [row[REASON_COLUMN] for row in rows] == [Reason.MALFORMED_JSON] * 2


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b'{"a":"\xc3\xa9 \xe2\x9c\x93"}', '{"a":"é ✓"}'),
        (b"\xef\xbb\xbf{}", "\ufeff{}"),  # a byte-order mark is valid UTF-8
        ("sent \ufffd".encode(), "sent \ufffd"),  # U+FFFD as the producer sent it
        (b"", ""),
    ],
)
def test_utf8_bytes_become_their_text_and_are_not_kept(
    spark: SparkSession, data: bytes, text: str
) -> None:
    payload, payload_bytes = utf8_payload(F.col("data"))
    row = spark.createDataFrame([(data,)], "data BINARY").select(payload, payload_bytes).first()
    assert (row[0], row[1]) == (text, None)
    assert decoded_payload(data) == (text, None)  # the driver-side decoding (Kinesis)


@pytest.mark.parametrize(
    "data",
    [
        b"caf\xe9",
        b"\xed\xa0\x80",  # an encoded surrogate
        b"\xc0\xaf",  # an overlong '/'
        b"\xf4\x90\x80\x80",  # past U+10FFFF
        b"ok \xe2\x82",  # cut inside a character
        "sent \ufffd".encode() + b"\x80",  # a real U+FFFD beside an invalid byte
    ],
)
def test_bytes_not_utf8_are_kept_beside_a_readable_text(spark: SparkSession, data: bytes) -> None:
    payload, payload_bytes = utf8_payload(F.col("data"))
    row = spark.createDataFrame([(data,)], "data BINARY").select(payload, payload_bytes).first()
    # The text has U+FFFD for what could not be read (how many is the decoder's business).
    assert "\ufffd" in row[0] and row[0].encode("utf-8")
    assert row[1] == bytearray(data)
    assert decoded_payload(data)[1] == data


def test_decoded_payload_of_no_data_is_no_payload() -> None:
    assert decoded_payload(None) == (None, None)


def test_with_ingest_time_gives_the_raw_schema(spark: SparkSession) -> None:
    records = with_ingest_time(landed(spark, {"file:/lake/landing/telemetry/a.jsonl": "x\n"}))
    assert [(f.name, f.dataType) for f in records.schema.fields] == [
        (f.name, f.dataType) for f in RAW_SCHEMA.fields
    ]
    row = records.first()
    assert row.ingest_date == row.ingest_time.date()


# --- Files, a line per row: the same RAW rows, no file read whole ------------------------------

MODIFIED = datetime(2026, 3, 1, 12, 0)
AWKWARD_FILES = {
    "a.jsonl": b'{"n":1}\r\n{"n":2}\n\n{"n":"\xff"}\n',  # CRLF, a blank line, a bad byte
    # A byte-order mark starting a file is the file's; one starting a later line is the line's.
    "b/c.jsonl": b"\xef\xbb\xbf{}\n\xef\xbb\xbf{}\nno final line break \xe2\x82",
    "empty.jsonl": b"",
    "one.jsonl": b"\n",
    "lone-cr.jsonl": b"x\ry\r\n\r\n",  # a CR inside a line stays in it
}


def land(folder: Path, files: dict[str, bytes]) -> str:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return f"file://{folder}"


def read_lines(spark: SparkSession, landing: str) -> DataFrame:
    """What the line reader makes of a folder, stamped as adoption stamps it."""
    text = (
        spark.read.format("text").options(**landing_line_options(FilesSourceConfig())).load(landing)
    )
    return (
        landing_lines(text)
        .withColumn("ingest_time", F.lit(MODIFIED))
        .withColumn("ingest_date", F.to_date(F.lit(MODIFIED)))
    )


def read_whole(spark: SparkSession, landing: str) -> DataFrame:
    text = (
        spark.read.format("text").options(**files_reader_options(FilesSourceConfig())).load(landing)
    )
    files = text.select(
        "value",
        F.col("_metadata.file_path").alias("file_path"),
        F.col("_metadata.file_modification_time").alias("file_modification_time"),
    )
    return landing_records(files, landing).withColumn("ingest_time", F.lit(MODIFIED))


def records_of(frame: DataFrame) -> list[tuple]:
    columns = ["source_stream", "source_partition", "source_offset", "payload", "payload_bytes"]
    return sorted(
        (tuple(bytes(v) if isinstance(v, bytearray) else v for v in row))
        for row in frame.select(*columns).collect()
    )


def test_line_reader_gives_the_rows_of_the_whole_file_reader(
    spark: SparkSession, tmp_path: Path
) -> None:
    landing = land(tmp_path / "landing", AWKWARD_FILES)
    by_line = landing_line_records(read_lines(spark, landing), landing)

    assert by_line.schema.fieldNames() == RAW_SCHEMA.fieldNames()
    assert records_of(by_line) == records_of(read_whole(spark, landing))
    assert records_of(by_line) == [
        (landing, "a.jsonl", "1", '{"n":1}', None),
        (landing, "a.jsonl", "2", '{"n":2}', None),
        (landing, "a.jsonl", "3", "", None),
        (landing, "a.jsonl", "4", '{"n":"\ufffd"}', b'{"n":"\xff"}'),
        (landing, "b/c.jsonl", "1", "{}", None),
        (landing, "b/c.jsonl", "2", "\ufeff{}", None),
        (landing, "b/c.jsonl", "3", "no final line break \ufffd", b"no final line break \xe2\x82"),
        (landing, "lone-cr.jsonl", "1", "x\ry", None),
        (landing, "lone-cr.jsonl", "2", "", None),
        (landing, "one.jsonl", "1", "", None),
    ]


@contextmanager
def tiny_splits(spark: SparkSession) -> Iterator[None]:
    """Spark reads every file in splits of a few bytes, side by side, as it would a huge one."""
    settings = {"spark.sql.files.maxPartitionBytes": "37", "spark.sql.files.openCostInBytes": "0"}
    before = {key: spark.conf.get(key) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            spark.conf.set(key, value)


def test_lines_of_a_file_read_in_many_splits_keep_their_line_numbers(
    spark: SparkSession, tmp_path: Path
) -> None:
    lines = {
        "big.jsonl": [f'{{"n":{n}}}' + " " * (n % 17) for n in range(1, 301)],
        "small.jsonl": ['{"n":1}', '{"n":2}'],
    }
    files = {name: ("\n".join(text) + "\n").encode() for name, text in lines.items()}
    landing = land(tmp_path / "landing", files)
    with tiny_splits(spark):
        by_line = read_lines(spark, landing)
        splits = by_line.select("file_path", "file_block_start").distinct().count()
        actual = records_of(landing_line_records(by_line, landing))

    assert splits > 100  # the numbering really spans splits (and tasks)
    assert actual == sorted(
        (landing, name, str(number), text, None)
        for name, texts in lines.items()
        for number, text in enumerate(texts, start=1)
    )


# --- a landing file of 1 GiB, streamed ----------------------------------------------------------

GIB = 1 << 30
MIB = 1 << 20


def sparse_landing_file(path: Path, events: dict[int, str]) -> dict[int, str]:
    """A 1 GiB JSON-lines file that takes a few MB of disk; its event lines by line number.

    The file is 1,024 chunks of 1 MiB, each ending in a line break; the rest of a chunk is a
    hole (NUL bytes, never written). Chunk ``k`` of ``events`` starts with that event's line,
    so the chunk holds two lines. Chunks at multiples of 128 MiB start where Spark splits the
    file.
    """
    lines = {}
    number = 0
    with path.open("wb") as file:
        file.truncate(GIB)
        for chunk in range(GIB // MIB):
            if chunk in events:
                file.seek(chunk * MIB)
                file.write(events[chunk].encode() + b"\n")
                number += 1
                lines[number] = events[chunk]
            file.seek((chunk + 1) * MIB - 1)
            file.write(b"\n")
            number += 1
    lines[0] = str(number)  # the total, under a number no line has
    return lines


@pytest.mark.slow
def test_a_1gib_landing_file_is_streamed_in_splits_with_every_line_numbered(
    spark: SparkSession, tmp_path: Path
) -> None:
    folder = tmp_path / "landing"
    folder.mkdir()
    chunks = [0, 1, 127, 128, 129, 256, 511, 512, 895, 896, 1023]  # 128 = the first split's end
    events = {chunk: event_payload(event_id=f"evt-{chunk}") for chunk in chunks}
    expected = sparse_landing_file(folder / "big.jsonl", events)
    total = int(expected.pop(0))
    assert (folder / "big.jsonl").stat().st_blocks * 512 < 64 * MIB  # sparse: CI's disk is safe
    landing = f"file://{folder}"

    seen: dict[str, Any] = {"lines": 0, "splits": 0, "events": []}

    def archive(batch: DataFrame, batch_id: int) -> None:
        # What the raw archiver does with each micro-batch of the line reader.
        records = landing_line_records(batch, landing)
        seen["lines"] += records.count()
        seen["splits"] += batch.select("file_block_start").distinct().count()
        events_only = records.where(F.col("payload").startswith("{"))
        classified = events_only.transform(classify_records)
        seen["events"] += [
            (int(row["source_offset"]), row["payload"], row[REASON_COLUMN])
            for row in classified.collect()
        ]

    lake = LakeLayout(root=f"file://{tmp_path}/lake", landing_root=landing)
    query = (
        landing_line_source(spark, lake, FilesSourceConfig())
        .writeStream.foreachBatch(archive)
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination(600)
    assert query.exception() is None

    assert seen["lines"] == total == 1024 + len(chunks)  # every line once, none lost
    assert seen["splits"] == 8  # read as eight 128 MiB splits, side by side, never whole
    assert sorted(seen["events"]) == [(n, text, None) for n, text in sorted(expected.items())]


# --- Kafka, at the local broker ----------------------------------------------------------------


@pytest.mark.slow
def test_kafka_tombstone_and_value_not_utf8_reach_raw_as_sent_and_are_malformed_json(
    spark: SparkSession, local_infra: WeirConfig
) -> None:
    from confluent_kafka import Producer

    from weir.infra.kafka import create_topic

    servers = local_infra.sources.kafka.bootstrap_servers
    topic = create_topic(servers, f"inputs-{uuid.uuid4().hex[:8]}", 1, timeout=30)
    not_utf8 = event_payload(status="@").encode().replace(b"@", b"caf\xe9")
    values = [event_payload().encode(), None, not_utf8]  # None: a tombstone
    producer = Producer({"bootstrap.servers": servers})
    for value in values:
        producer.produce(topic, value=value, key=b"dev-1")
    assert producer.flush(30) == 0

    messages = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", servers)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
    )
    raw = with_ingest_time(kafka_records(messages))
    rows = raw.transform(classify_records).orderBy(F.col("source_offset").cast("int")).collect()

    assert [(r["payload_bytes"], r[REASON_COLUMN]) for r in rows] == [
        (None, None),
        (None, Reason.MALFORMED_JSON),
        (bytearray(not_utf8), Reason.MALFORMED_JSON),
    ]
    assert rows[1]["payload"] is None and rows[0]["payload"] == values[0].decode()
