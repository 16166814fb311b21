"""The Kafka source: Spark's Kafka source, options built from ``sources.kafka`` (pure, tested).

Coordinates: stream = topic, partition and offset as text, key as text; the payload is the
record value as UTF-8 text (a value that is not UTF-8 also kept as bytes, a null value -- a
tombstone -- as a null payload: both are malformed_json) and ``arrival_time`` the Kafka record
timestamp.

Data loss (offsets the checkpoint expects are gone: retention expired, topic recreated) fails
the query by default (``failOnDataLoss=true``); ``weir.layers.streaming`` turns that failure
into a message that says how to proceed.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.config import ConfigError, KafkaSourceConfig
from weir.sources.records import utf8_payload, with_ingest_time

KAFKA = "kafka"

# Amazon MSK IAM authentication: classes of the aws-msk-iam-auth jar (on the EMR classpath,
# see docs/streaming.md).
MSK_IAM_JAAS_CONFIG = "software.amazon.msk.auth.iam.IAMLoginModule required;"
MSK_IAM_CALLBACK_HANDLER = "software.amazon.msk.auth.iam.IAMClientCallbackHandler"

# Client properties Spark's Kafka source manages itself and refuses as kafka.* options.
_MANAGED_BY_SPARK = (
    "auto.offset.reset",
    "enable.auto.commit",
    "interceptor.classes",
    "key.deserializer",
    "value.deserializer",
    "key.serializer",
    "value.serializer",
)
# Consumer fetch sizes for draining a backlog: the client's defaults (500 records per poll,
# 1 MiB per partition per fetch) make a task spend more time in round trips than in parsing;
# these read the same topic about 1.5x faster locally (docs/streaming.md). Any of them can be
# overridden through sources.kafka.security.options.
CONSUMER_DEFAULTS = {
    "kafka.max.poll.records": "10000",
    "kafka.max.partition.fetch.bytes": str(8 << 20),
    "kafka.fetch.max.bytes": str(64 << 20),
}
# Client properties this builder sets from their own configuration keys.
_SET_FROM_CONFIG = ("bootstrap.servers", "security.protocol", "sasl.mechanism")


def kafka_options(kafka: KafkaSourceConfig) -> dict[str, str]:
    """Options of Spark's Kafka source for ``sources.kafka`` (pure).

    Raises ConfigError naming the key when the security settings do not fit together.
    """
    security = kafka.security
    key = "sources.kafka.security"
    options = {
        "kafka.bootstrap.servers": kafka.bootstrap_servers,
        "subscribe": kafka.topic,
        "startingOffsets": kafka.starting_offsets,
        "failOnDataLoss": str(kafka.fail_on_data_loss).lower(),
        "includeHeaders": "false",
        "kafka.security.protocol": security.protocol,
        **CONSUMER_DEFAULTS,
    }
    if kafka.max_offsets_per_trigger is not None:
        options["maxOffsetsPerTrigger"] = str(kafka.max_offsets_per_trigger)

    extra = {}
    for name, value in security.options.items():
        bare = name.removeprefix("kafka.")
        if bare in _MANAGED_BY_SPARK:
            raise ConfigError(f"{key}.options.{name}", "is managed by Spark's Kafka source")
        if bare in _SET_FROM_CONFIG:
            raise ConfigError(
                f"{key}.options.{name}", "is set from its own key in sources.kafka; remove it here"
            )
        extra[f"kafka.{bare}"] = value

    sasl = security.protocol.startswith("SASL_")
    if sasl and security.sasl_mechanism is None:
        raise ConfigError(f"{key}.sasl_mechanism", f"is required with protocol {security.protocol}")
    if not sasl and security.sasl_mechanism is not None:
        raise ConfigError(
            f"{key}.sasl_mechanism",
            f"needs protocol SASL_SSL (protocol is {security.protocol})",
        )
    if security.sasl_mechanism == "AWS_MSK_IAM":
        options.update(
            {
                "kafka.sasl.mechanism": "AWS_MSK_IAM",
                "kafka.sasl.jaas.config": MSK_IAM_JAAS_CONFIG,
                "kafka.sasl.client.callback.handler.class": MSK_IAM_CALLBACK_HANDLER,
            }
        )
    elif security.sasl_mechanism is not None:
        options["kafka.sasl.mechanism"] = security.sasl_mechanism
        if "kafka.sasl.jaas.config" not in extra:
            raise ConfigError(
                f"{key}.options",
                f"{security.sasl_mechanism} needs sasl.jaas.config with the credentials "
                "(e.g. ${KAFKA_JAAS} from the environment)",
            )
    options.update(extra)
    return options


def kafka_records(messages: DataFrame) -> DataFrame:
    """RAW rows (without ingest time) from Kafka source rows (key, value, topic, …). Pure."""
    payload, payload_bytes = utf8_payload(F.col("value"))
    return messages.select(
        F.lit(KAFKA).alias("source"),
        F.col("topic").alias("source_stream"),
        F.col("partition").cast("string").alias("source_partition"),
        F.col("offset").cast("string").alias("source_offset"),
        F.col("key").cast("string").alias("record_key"),
        payload.alias("payload"),
        F.col("timestamp").alias("arrival_time"),
        payload_bytes.alias("payload_bytes"),
    )


def kafka_source(spark: SparkSession, kafka: KafkaSourceConfig) -> DataFrame:
    """Streaming RAW rows from the topic ``sources.kafka.topic``."""
    messages = spark.readStream.format("kafka").options(**kafka_options(kafka)).load()
    return with_ingest_time(kafka_records(messages))


def whole_topic(spark: SparkSession, kafka: KafkaSourceConfig) -> DataFrame:
    """The topic's messages as a batch read, earliest to latest, with the stream's consumer
    options (for benchmarks and checks that look at everything a topic holds)."""
    options = {
        k: v
        for k, v in kafka_options(kafka).items()
        if k not in ("maxOffsetsPerTrigger", "startingOffsets")
    }
    return (
        spark.read.format("kafka")
        .options(**options)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
    )
