"""`weir stream --source kafka` under the faults of issue #21 (docs/streaming.md): records Kafka
no longer holds, signals to the process, `weir maintain` beside a running stream."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from collections import Counter
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from weir import crashpoints
from weir.cli import main
from weir.config import WeirConfig
from weir.crashpoints import HOLD_ENV
from weir.infra.kafka import admin_client, create_topic
from weir.infra.process import wait_until
from weir.lake import LakeLayout, local_path
from weir.layers.streaming import run_stream
from weir.layers.streaming.run import describe_kafka_loss

from .builders import (
    StreamProcess,
    assert_raw_is_valid_plus_quarantine,
    assert_speed_equals_batch,
    batch_in_flight,
    committed_batches,
    kafka_topic,
    lake_config,
    produce,
    raw_count,
    table,
    versions,
    write_conf,
)


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
    config = kafka_topic(lake_config(local_infra, tmp_path / "lake"), partitions=1)
    lake = LakeLayout.from_config(config)
    topic = config.sources.kafka.topic
    conf = write_conf(config, tmp_path / "stream.yaml")
    admin = admin_client(config.sources.kafka.bootstrap_servers)
    produce(config, 0, 20)
    assert stream_once(conf) == 0
    assert raw_offsets(spark, lake) == list(range(20))

    # 1. Retention: offsets 20..39 expire before the stream reads them, deleted by the
    # broker's own time retention (the topic keeps records for a second).
    produce(config, 20, 20)
    expire_by_retention(config, admin, topic)
    before = versions(spark, lake)
    capsys.readouterr()
    assert stream_once(conf) == 1
    error = capsys.readouterr().err
    assert f"raw-kafka: Kafka no longer holds {topic}-0 offsets 20 to 39" in " ".join(
        error.split()
    ), error
    assert "FAIL_ON_DATA_LOSS=false" in error and "Traceback" not in error
    assert versions(spark, lake) == before  # nothing skipped, nothing written
    # The operator accepts the gap once; the stream goes on from Kafka's earliest offset.
    monkeypatch.setenv("WEIR__SOURCES__KAFKA__FAIL_ON_DATA_LOSS", "false")
    assert stream_once(conf) == 0
    monkeypatch.delenv("WEIR__SOURCES__KAFKA__FAIL_ON_DATA_LOSS")
    assert raw_offsets(spark, lake) == list(range(20))

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
    assert raw_offsets(spark, lake) == sorted([*range(20), 0, 1, 2, 3, 4])


def expire_by_retention(config: WeirConfig, admin, topic: str) -> None:
    """Let the broker's time retention delete every record of partition 0 of ``topic``, then
    give the topic the broker's default retention back.

    With a second of retention, the broker's next retention check (every second on the local
    broker) rolls the partition's segment and deletes it: Kafka's earliest offset becomes its
    end offset."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    def alter(operation: AlterConfigOpType, value: str | None) -> None:
        entry = ConfigEntry("retention.ms", value, incremental_operation=operation)
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
        for done in admin.incremental_alter_configs([resource]).values():
            done.result(timeout=30)

    def retention_ms() -> str:
        resource = ConfigResource(ResourceType.TOPIC, topic)
        described = next(iter(admin.describe_configs([resource]).values())).result(timeout=30)
        return described["retention.ms"].value

    watermarks = Consumer(
        {"bootstrap.servers": config.sources.kafka.bootstrap_servers, "group.id": "retention"}
    )
    partition = TopicPartition(topic, 0)
    try:
        end = watermarks.get_watermark_offsets(partition, timeout=30)[1]
        alter(AlterConfigOpType.SET, "1000")
        wait_until(
            lambda: watermarks.get_watermark_offsets(partition, timeout=5)[0] == end,
            timeout=60,
            what=f"offsets before {end} deleted by retention",
        )
    finally:
        watermarks.close()
        alter(AlterConfigOpType.DELETE, None)
    wait_until(lambda: retention_ms() != "1000", timeout=30, what="default retention back")


def _created(bootstrap_servers: str, topic: str) -> bool:
    from confluent_kafka import KafkaException

    try:
        create_topic(bootstrap_servers, topic, 1, 30)
    except KafkaException:  # still being deleted
        return False
    return True


@pytest.mark.slow
def test_sigterm_to_a_kafka_stream_finishes_its_batch_a_second_stops_it_and_nothing_is_lost(
    spark: SparkSession, local_infra: WeirConfig, tmp_path: Path
) -> None:
    config = kafka_topic(lake_config(local_infra, tmp_path / "lake", trigger_interval_seconds=1))
    kafka = config.sources.kafka.model_copy(update={"max_offsets_per_trigger": 10})
    config = config.model_copy(
        update={"sources": config.sources.model_copy(update={"kafka": kafka})}
    )
    lake = LakeLayout.from_config(config)
    produce(config, 0, 40)

    # 1. Held right after batch 0's RAW commit (QUARANTINE not yet): the first SIGTERM cannot
    # let the batch finish, the second interrupts the process there, the worst moment.
    stream = StreamProcess(config, tmp_path, "kafka", env={HOLD_ENV: crashpoints.RAW_COMMITTED})
    try:
        stream.wait_for(lambda: raw_count(spark, lake) > 0, "batch 0 commits RAW")
        stream.process.send_signal(signal.SIGTERM)
        # Two signals sent at once can reach the handler as one: wait until the first was seen.
        stream.wait_for(lambda: "SIGTERM: stopping after" in stream.output, "the first SIGTERM")
        stream.process.send_signal(signal.SIGTERM)
        code = stream.process.wait(timeout=120)
    finally:
        stream.kill()
        _kill_group(stream)  # the JVM, if it outlived its driver
    assert code == 130, stream.output[-4000:]  # interrupted, not reported as success
    assert committed_batches(lake, "raw-kafka") == set()

    # 2. Unheld: the first SIGTERM lands inside a running micro-batch, which finishes.
    stream = StreamProcess(config, tmp_path, "kafka")
    try:
        # Batch 0, planned by the interrupted process, is replayed first: wait for the next.
        running = stream.wait_for(
            lambda: (
                (batch_in_flight(lake, "raw-kafka") or 0) >= 1
                and batch_in_flight(lake, "raw-kafka")
            ),
            "raw-kafka runs batch 1 or later",
            interval=0.02,
        )
        stream.process.send_signal(signal.SIGTERM)
        code = stream.process.wait(timeout=300)
    finally:
        stream.kill()
        _kill_group(stream)
    assert code == 0, stream.output[-4000:]
    assert "stopped by signal" in stream.output
    assert running in committed_batches(lake, "raw-kafka")  # finished, not interrupted

    # A restart reads to the end (in one batch: the limit was only there to make several):
    # every produced record once.
    unlimited = config.sources.kafka.model_copy(update={"max_offsets_per_trigger": None})
    sources = config.sources.model_copy(update={"kafka": unlimited})
    run_stream(spark, config.model_copy(update={"sources": sources}), "kafka", available_now=True)
    coordinates = [
        (r.source_partition, r.source_offset)
        for r in table(spark, lake.raw).select("source_partition", "source_offset").collect()
    ]
    assert len(coordinates) == len(set(coordinates)) == 40
    assert_raw_is_valid_plus_quarantine(spark, lake)


@pytest.mark.slow
def test_weir_maintain_beside_a_running_stream_compacts_and_the_stream_loses_nothing(
    spark: SparkSession, local_infra: WeirConfig, tmp_path: Path
) -> None:
    from delta.tables import DeltaTable

    config = kafka_topic(lake_config(local_infra, tmp_path / "lake", trigger_interval_seconds=1))
    kafka = config.sources.kafka.model_copy(update={"max_offsets_per_trigger": 10})
    config = config.model_copy(
        update={"sources": config.sources.model_copy(update={"kafka": kafka})}
    )
    lake = LakeLayout.from_config(config)
    produce(config, 0, 30)
    stop = threading.Event()
    failures: list[BaseException] = []

    def stream() -> None:
        try:
            run_stream(spark, config, "kafka", stop=stop)
        except BaseException as error:  # reported by the assertions below
            failures.append(error)

    runner = threading.Thread(target=stream, daemon=True)
    runner.start()
    try:
        wait_until(
            lambda: raw_count(spark, lake) == 30 or bool(failures), timeout=300, what="30 records"
        )
        produce(config, 30, 30)  # the stream has work while maintain runs
        # The real command, in this process: the same Delta commits a separate one would make.
        assert main(["maintain", "--conf", str(write_conf(config, tmp_path / "m.yaml"))]) == 0
        assert runner.is_alive() and failures == []  # the stream kept running
        produce(config, 60, 10)
        wait_until(
            lambda: raw_count(spark, lake) == 70 or bool(failures), timeout=300, what="70 records"
        )
    finally:
        stop.set()
        runner.join(timeout=300)
    assert failures == []

    for path in (lake.raw, lake.speed):
        operations = {r.operation for r in DeltaTable.forPath(spark, path).history().collect()}
        assert "OPTIMIZE" in operations, (path, operations)  # maintain compacted beside it
    coordinates = Counter(
        (r.source_partition, r.source_offset)
        for r in table(spark, lake.raw).select("source_partition", "source_offset").collect()
    )
    assert len(coordinates) == 70 and set(coordinates.values()) == {1}
    assert_speed_equals_batch(spark, lake)


def _kill_group(stream: StreamProcess) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(stream.process.pid, signal.SIGKILL)


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
