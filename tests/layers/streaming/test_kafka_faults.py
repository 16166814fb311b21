"""`weir stream --source kafka` under the faults of issue #21 (docs/streaming.md): records Kafka
no longer holds, signals to the process, `weir maintain` beside a running stream."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from weir.cli import main
from weir.config import WeirConfig
from weir.infra.kafka import admin_client, create_topic
from weir.infra.process import wait_until
from weir.lake import LakeLayout, local_path
from weir.layers.streaming.run import describe_kafka_loss

from .builders import kafka_topic, lake_config, produce, table, versions, write_conf


def raw_offsets(spark: SparkSession, lake: LakeLayout) -> list[int]:
    """RAW's Kafka offsets, sorted; an offset archived twice shows twice."""
    return sorted(int(r.source_offset) for r in table(spark, lake.raw).collect())


def stream_once(conf: Path, *options: str) -> int:
    return main(["stream", "--conf", str(conf), "--source", "kafka", "--available-now", *options])


@pytest.mark.slow
def test_records_kafka_lost_fail_the_restart_naming_them_until_the_operator_acts(
    spark: SparkSession,
    local_infra: WeirConfig,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from confluent_kafka import TopicPartition

    config = kafka_topic(lake_config(local_infra, tmp_path / "lake"), partitions=1)
    lake = LakeLayout.from_config(config)
    topic = config.sources.kafka.topic
    conf = write_conf(config, tmp_path / "stream.yaml")
    admin = admin_client(config.sources.kafka.bootstrap_servers)
    produce(config, 0, 20)
    assert stream_once(conf) == 0
    assert raw_offsets(spark, lake) == list(range(20))

    # 1. Retention: offsets 20..29 expire before the stream reads them (deleteRecords is what
    # retention does to a partition's start, without waiting for it).
    produce(config, 20, 20)
    for done in admin.delete_records([TopicPartition(topic, 0, 30)]).values():
        done.result(timeout=30)
    before = versions(spark, lake)
    capsys.readouterr()
    assert stream_once(conf) == 1
    error = capsys.readouterr().err
    assert f"raw-kafka: Kafka no longer holds {topic}-0 offsets 20 to 29" in " ".join(
        error.split()
    ), error
    assert "FAIL_ON_DATA_LOSS=false" in error and "Traceback" not in error
    assert versions(spark, lake) == before  # nothing skipped, nothing written
    # The operator accepts the gap once; the stream goes on from Kafka's earliest offset.
    monkeypatch.setenv("WEIR__SOURCES__KAFKA__FAIL_ON_DATA_LOSS", "false")
    assert stream_once(conf) == 0
    monkeypatch.delenv("WEIR__SOURCES__KAFKA__FAIL_ON_DATA_LOSS")
    assert raw_offsets(spark, lake) == list(range(20)) + list(range(30, 40))

    # 2. The topic is deleted and recreated: its offsets start again at 0.
    for done in admin.delete_topics([topic]).values():
        done.result(timeout=30)
    wait_until(
        lambda: topic not in admin.list_topics(timeout=5).topics, timeout=30, what="topic deleted"
    )
    wait_until(
        lambda: _created(config.sources.kafka.bootstrap_servers, topic),
        timeout=60,
        what="topic recreated",
    )
    produce(config, 100, 5)
    before = versions(spark, lake)
    capsys.readouterr()
    assert stream_once(conf) == 1
    error = " ".join(capsys.readouterr().err.split())
    assert "raw-kafka: Kafka no longer holds" in error and "--reset-checkpoint" in error, error
    assert versions(spark, lake) == before
    # The documented action: both Kafka checkpoints go, the archiver starts a new epoch.
    for query in ("raw-kafka", "speed-kafka"):
        shutil.rmtree(local_path(lake.checkpoint(query)))
    assert stream_once(conf, "--reset-checkpoint") == 0
    assert raw_offsets(spark, lake) == sorted(
        list(range(20)) + list(range(30, 40)) + [0, 1, 2, 3, 4]
    )


def _created(bootstrap_servers: str, topic: str) -> bool:
    from confluent_kafka import KafkaException

    try:
        create_topic(bootstrap_servers, topic, 1, 30)
    except KafkaException:  # still being deleted
        return False
    return True


@pytest.mark.parametrize(
    ("message", "earliest", "said"),
    [
        (
            "Cannot fetch offset 20 (GroupId: spark-kafka-x, TopicPartition: t-1-0). Some data",
            30,
            "t-1-0 offsets 20 to 29 (10 records; its earliest offset is now 30)",
        ),
        (
            "Cannot fetch offset 20 (GroupId: g, TopicPartition: t-0). ",
            None,
            "t-0 from offset 20 on",
        ),
        (
            "Partition t-0's offset was changed from 40 to 5, some data may have been missed",
            None,
            "t-0 from offset 40 on (its offsets went back to 5: "
            "the topic was deleted and recreated)",
        ),
        (
            "Set(t-0, t-1) are gone. Some data may have been missed",
            None,
            "the partitions Set(t-0, t-1) (deleted)",
        ),
    ],
    ids=["expired", "expired, broker silent", "recreated", "partitions deleted"],
)
def test_a_kafka_data_loss_message_names_the_lost_records(
    message: str, earliest: int | None, said: str
) -> None:
    assert describe_kafka_loss(message, lambda _: earliest) == said
