"""Benchmark of `weir simulate` into Kafka, beside Kafka's own producer performance tool.

Both run in one invocation against one private single-node broker (weir.infra.private_stack,
free ports, a temporary state folder), each into a fresh topic with the configured partition
count, with the same producer settings (acks=all, idempotence, lz4, linger and batch size of
``weir.simulate.sinks.KAFKA_PRODUCER_SETTINGS``) and the same payloads: the tool sends
records drawn from a file of the simulator's own payloads (``--payload-file``), so the ceiling
is Kafka's Java producer pushing these bytes, and the candidate is the whole simulator — fleet
model, fault injection, JSON, ledger — pushing them through librdkafka.

Beside them, ``python-client``: the same payloads, ready-made, sent from Python through
confluent-kafka with the simulator's settings and a delivery report per record, nothing
generated and no ledger — what the simulator's transport alone reaches, so the gap between it
and the simulator is the simulator's own work.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
import uuid
from contextlib import nullcontext
from datetime import datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import Optional

from pyspark.sql import SparkSession

from weir.bench.harness import (
    Measurement,
    SuiteResult,
    Target,
    environment,
    load_average,
    new_topic,
)
from weir.config import WeirConfig
from weir.errors import WeirError

SUITE = "simulate"
CEILING = "kafka-producer-perf-test"
CANDIDATE = "weir-simulate"
PYTHON_CLIENT = "python-client"
# Records per produce_batch call and partition (the simulator hands over a tick at a time).
_CLIENT_CHUNK = 2500
DEVICES = 1000
INTERVAL_S = 1.0
SAMPLE_PAYLOADS = 20_000
TOOL_CLASS = "org.apache.kafka.tools.ProducerPerformance"
_SUMMARY = re.compile(r"(\d+) records sent, ([\d.]+) records/sec")


def _with_topic(config: WeirConfig, topic: str) -> WeirConfig:
    kafka = config.sources.kafka.model_copy(update={"topic": topic})
    return config.model_copy(update={"sources": config.sources.model_copy(update={"kafka": kafka})})


def _new_topic(config: WeirConfig) -> WeirConfig:
    return _with_topic(config, new_topic(config, f"bench-{uuid.uuid4().hex[:8]}"))


def simulate_options(events: int, now: datetime):
    """A fleet whose history ends now: a live run paces itself to the wall clock, so the
    events must lie in the past for `--rate 0` to mean as fast as the machine allows."""
    from weir.simulate.run import SimulateOptions

    span = timedelta(seconds=events / DEVICES * INTERVAL_S + 60)
    return SimulateOptions(
        devices=DEVICES,
        rate=0,
        count=events,
        sink="kafka",
        seed=1,
        start=now - span,
        interval_s=INTERVAL_S,
    )


def write_payload_file(config: WeirConfig, events: int, now: datetime, target: Path) -> float:
    """The simulator's first payloads, one per line, for the tool; returns their mean size."""
    from weir.simulate.run import plan_run
    from weir.simulate.stream import RecordStream

    stream = RecordStream(plan_run(config, simulate_options(events, now), now).spec)
    records = (record for _, batch in stream.ticks() for record in batch)
    payloads = [record.payload for record in islice(records, SAMPLE_PAYLOADS)]
    # The tool splits the file on a delimiter; the simulator's JSON holds no raw newline.
    target.write_bytes(b"\n".join(p for p in payloads if b"\n" not in p))
    return sum(map(len, payloads)) / len(payloads)


def producer_perf_test(
    config: WeirConfig, events: int, payload_file: Path, java: str, jars_dir: Path
) -> Measurement:
    """Kafka's ProducerPerformance from the broker's own jars; its reported records/s."""
    from weir.simulate.sinks import KAFKA_PRODUCER_SETTINGS

    settings = {
        key: value
        for key, value in KAFKA_PRODUCER_SETTINGS.items()
        if key in ("linger.ms", "batch.size", "compression.type", "acks")
    }
    props = [f"bootstrap.servers={config.sources.kafka.bootstrap_servers}"] + [
        f"{key}={str(value).lower()}" for key, value in settings.items()
    ]
    props.append("enable.idempotence=true")
    command = [
        java,
        "-Xmx1g",
        "-cp",
        str(jars_dir / "*"),
        TOOL_CLASS,
        *("--topic", config.sources.kafka.topic),
        *("--num-records", str(events)),
        *("--throughput", "-1"),
        *("--payload-file", str(payload_file)),
        "--producer-props",
        *props,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    match = None
    for line in completed.stdout.splitlines():
        match = _SUMMARY.search(line) or match
    if completed.returncode != 0 or match is None:
        raise WeirError(
            f"{TOOL_CLASS} failed (exit {completed.returncode}): "
            f"{(completed.stderr or completed.stdout)[-2000:]}"
        )
    sent, rate = int(match.group(1)), float(match.group(2))
    return Measurement(name=CEILING, events=sent, seconds=sent / rate)


def python_client(config: WeirConfig, events: int, payloads: list[bytes]) -> Measurement:
    """``events`` of ``payloads`` (cycled) sent through confluent-kafka from Python, with the
    simulator's producer settings, partitions in turn, a delivery report kept per record."""
    from confluent_kafka import Producer

    from weir.simulate.sinks import KAFKA_PRODUCER_SETTINGS

    reports: list = []
    keep = reports.append
    producer = Producer(
        {
            **KAFKA_PRODUCER_SETTINGS,
            "bootstrap.servers": config.sources.kafka.bootstrap_servers,
            "on_delivery": lambda error, message: keep(error),
        }
    )
    topic, partitions = config.sources.kafka.topic, config.sources.kafka.partitions
    room = int(KAFKA_PRODUCER_SETTINGS["queue.buffering.max.messages"]) // 2
    chunks = [
        [{"value": payloads[(first + i) % len(payloads)]} for i in range(_CLIENT_CHUNK)]
        for first in range(0, len(payloads), _CLIENT_CHUNK)
    ]
    started = time.perf_counter()
    sent = 0
    while sent < events:
        for partition in range(partitions):
            chunk = chunks[(sent // _CLIENT_CHUNK) % len(chunks)][: events - sent]
            if not chunk:
                break
            queued = 0
            while queued < len(chunk):
                queued += producer.produce_batch(topic, chunk[queued:], partition=partition)
                if queued < len(chunk):
                    producer.poll(0.05)  # the local queue is full: serve reports
            sent += len(chunk)
        producer.poll(0)
        while sent - len(reports) > room:
            producer.poll(0.05)
    unsent = producer.flush(120)
    failed = sum(error is not None for error in reports)
    if unsent or len(reports) != events or failed:
        raise WeirError(
            f"{PYTHON_CLIENT}: {len(reports) - failed} of {events} records acknowledged"
        )
    return Measurement(PYTHON_CLIENT, events, time.perf_counter() - started)


def run(
    spark: Optional[SparkSession],
    *,
    events: int,
    repeat: int = 1,
    config: WeirConfig,
    running_stack: bool = False,
) -> SuiteResult:
    """Ceiling and candidate, each best of ``repeat`` (taken in turns), on one broker.

    The broker is a private one started for the run, or with ``running_stack`` the one
    ``config`` points at (a test's session stack); either way each measurement gets a topic
    of its own.
    """
    from weir.infra import private_stack
    from weir.infra.kafka import default_jars_dir, find_java
    from weir.simulate.run import plan_run, run_simulation

    result = SuiteResult(suite=SUITE)
    now = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory(prefix="weir-bench-") as folder:
        state = Path(folder)
        stack_context = nullcontext(config) if running_stack else private_stack(config, state)
        with stack_context as stack:
            payload_file = state / "payloads.txt"
            mean_bytes = write_payload_file(stack, events, now, payload_file)
            java, jars = find_java(), default_jars_dir()
            # Taken in turns (tool, simulator, tool, …): on a shared machine whose load comes
            # and goes, both then meet much the same conditions.
            payloads = [line for line in payload_file.read_bytes().split(b"\n") if line]
            tools, runs, clients = [], [], []
            for _ in range(repeat):
                tools.append(
                    producer_perf_test(_new_topic(stack), events, payload_file, java, jars)
                )
                sent = run_simulation(_new_topic(stack), simulate_options(events, now))
                if sent.status != "completed":
                    raise WeirError(f"simulator run {sent.run_id} ended {sent.status}")
                runs.append(Measurement(CANDIDATE, sent.acknowledged, sent.seconds))
                clients.append(python_client(_new_topic(stack), events, payloads))
            ceiling = min(tools, key=lambda m: m.seconds)
            candidate = min(runs, key=lambda m: m.seconds)
            client = min(clients, key=lambda m: m.seconds)
    result.measurements = [ceiling, candidate, client]
    plan = plan_run(config, simulate_options(events, now), now)
    result.environment = environment(
        devices=DEVICES,
        # The helper process the simulator split its work with (weir.simulate.run.Plan.helper).
        helper_process=plan.helper,
        partitions=config.sources.kafka.partitions,
        mean_payload_bytes=round(mean_bytes, 1),
        # How much of the Python client's rate the whole simulator keeps.
        simulator_share_of_python_client=round(
            candidate.events_per_second / client.events_per_second, 3
        ),
        load_average=load_average(),
    )
    result.evaluate([Target(CANDIDATE, CEILING, min_ratio=0.5, min_rate=200_000)])
    return result
