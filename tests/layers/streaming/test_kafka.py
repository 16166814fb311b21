"""`weir stream --source kafka` against the real local broker: exactly once under faults, kill -9
and a broker restart (docs/streaming.md)."""

from __future__ import annotations

import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from weir.cli import main
from weir.config import WeirConfig
from weir.errors import WeirError
from weir.infra.process import wait_until
from weir.lake import LakeLayout
from weir.layers.streaming import run_stream
from weir.simulate.faults import FaultMix
from weir.simulate.run import SimulateOptions, run_simulation

from .builders import (
    StreamProcess,
    assert_raw_and_quarantine_match_the_ledger,
    assert_speed_equals_batch,
    batch_in_flight,
    committed_batches,
    kafka_topic,
    lake_config,
    ledger_records,
    produce,
    raw_commits,
    raw_count,
    table,
    write_conf,
)


@pytest.mark.slow
def test_simulated_fault_mix_is_archived_once_and_quarantined_as_the_ledger_says(
    spark: SparkSession, local_infra: WeirConfig, tmp_path: Path
) -> None:
    config = kafka_topic(lake_config(local_infra, tmp_path / "lake"))
    lake = LakeLayout.from_config(config)
    options = SimulateOptions(
        devices=20, rate=0, count=1500, sink="kafka", seed=4, faults=FaultMix.preset("heavy")
    )
    run = run_simulation(config, options)
    assert (run.status, run.failed, run.unconfirmed) == ("completed", 0, 0)
    ledger = ledger_records(run.ledger_dir)
    assert {row["fate"] for row in ledger.values()} >= {"valid", "quarantine", "duplicate"}

    conf = write_conf(config, tmp_path / "stream.yaml")
    assert main(["stream", "--conf", str(conf), "--source", "kafka", "--available-now"]) == 0

    assert_raw_and_quarantine_match_the_ledger(spark, lake, ledger)
    raw = table(spark, lake.raw)
    assert {r.source_stream for r in raw.select("source_stream").distinct().collect()} == {
        config.sources.kafka.topic
    }
    assert raw.where("record_key IS NULL OR arrival_time IS NULL").count() == 0


@pytest.mark.slow
def test_kafka_stream_killed_mid_batch_while_producing_ends_like_a_clean_run(
    spark: SparkSession, local_infra: WeirConfig, tmp_path: Path
) -> None:
    config = kafka_topic(lake_config(local_infra, tmp_path / "lake", trigger_interval_seconds=1))
    lake = LakeLayout.from_config(config)
    # Faults whose speed-layer result is exact (no late events, no conflicting copies), so the
    # SPEED a clean run would publish is the batch computation over the RAW it archives.
    faults = FaultMix(
        {
            "duplicate": 0.03,
            "out_of_order": 0.05,
            "malformed_json": 0.02,
            "bad_type": 0.02,
            "out_of_range": 0.02,
        }
    )
    producing = threading.Event()
    results: list[Any] = []

    def simulate() -> None:
        options = SimulateOptions(devices=10, rate=40, sink="kafka", seed=9, faults=faults)
        results.append(run_simulation(config, options, stop=producing))

    producer = threading.Thread(target=simulate, daemon=True)
    producer.start()
    try:
        # Crash 1: the raw archiver is inside a micro-batch (its appends may be half done).
        stream = StreamProcess(config, tmp_path, "kafka")
        try:
            stream.wait_for(
                lambda: (batch_in_flight(lake, "raw-kafka") or 0) >= 1,
                "raw-kafka runs its second micro-batch",
                interval=0.02,
            )
        finally:
            stream.kill()
        commits_before = raw_commits(lake)

        # Crash 2, after a restart: the speed layer is inside a micro-batch (its MERGE and
        # state store), and the archiver has committed since the restart.
        speed_done = max(committed_batches(lake, "speed-kafka"), default=-1)
        stream = StreamProcess(config, tmp_path, "kafka")
        try:
            stream.wait_for(
                lambda: (
                    (batch_in_flight(lake, "speed-kafka") or -1) > speed_done + 1
                    and raw_commits(lake) > commits_before
                ),
                "both queries make progress after the restart",
                interval=0.02,
            )
        finally:
            stream.kill()
    finally:
        producing.set()
        producer.join(timeout=120)
    (run,) = results
    assert (run.status, run.failed, run.unconfirmed) == ("interrupted", 0, 0)

    # Restart once more and drain: the tables are what one clean run would have written.
    run_stream(spark, config, "kafka", available_now=True)

    assert_raw_and_quarantine_match_the_ledger(spark, lake, ledger_records(run.ledger_dir))
    assert_speed_equals_batch(spark, lake)


@pytest.mark.slow
def test_kafka_broker_restart_under_a_running_stream_loses_nothing(
    spark: SparkSession, weir_config: WeirConfig, tmp_path: Path
) -> None:
    from weir.infra import stack_config
    from weir.infra.kafka import KafkaBroker
    from weir.infra.process import free_ports

    kafka_port, controller_port, aws_port = free_ports(3)
    stack = stack_config(
        weir_config,
        tmp_path / "stack",
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        aws_port=aws_port,
    )
    # Short client timeouts: a stream facing a dead broker says so in seconds, not minutes.
    security = stack.sources.kafka.security.model_copy(
        update={"options": {"default.api.timeout.ms": "4000", "request.timeout.ms": "3000"}}
    )
    kafka = stack.sources.kafka.model_copy(update={"security": security})
    stack = stack.model_copy(update={"sources": stack.sources.model_copy(update={"kafka": kafka})})
    broker = KafkaBroker(stack)  # private: the session's shared broker is never touched
    broker.wait_ready(broker.launch(stop_with_parent=True))
    try:
        config = kafka_topic(lake_config(stack, tmp_path / "lake", trigger_interval_seconds=1))
        lake = LakeLayout.from_config(config)
        produce(config, 0, 100)
        stop = threading.Event()
        outcome: list[BaseException] = []

        def stream() -> None:
            try:
                run_stream(spark, config, "kafka", stop=stop)
            except BaseException as error:
                outcome.append(error)

        runner = threading.Thread(target=stream, daemon=True)
        runner.start()
        try:
            wait_until(lambda: raw_count(spark, lake) == 100, timeout=300, what="first records")
            broker.stop()
            # The outage: the stream either rides it out or fails with a clear error.
            runner.join(timeout=120)
            broker.wait_ready(broker.launch(stop_with_parent=True))
            produce(config, 100, 50)
            if runner.is_alive():
                wait_until(lambda: raw_count(spark, lake) == 150, timeout=300, what="recovery")
        finally:
            stop.set()
            runner.join(timeout=300)
        if outcome:
            (error,) = outcome
            assert isinstance(error, WeirError), error
            assert re.match(r"(raw|speed)-kafka failed: ", str(error)), error
        # A restart drains whatever is left, without loss or duplicates.
        run_stream(spark, config, "kafka", available_now=True)
    finally:
        broker.stop()

    coordinates = Counter(
        (r.source_partition, r.source_offset)
        for r in table(spark, lake.raw).select("source_partition", "source_offset").collect()
    )
    assert len(coordinates) == 150 and set(coordinates.values()) == {1}
    assert_speed_equals_batch(spark, lake)
