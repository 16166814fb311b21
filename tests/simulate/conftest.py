"""Fixtures for the simulator tests: a config of their own, a fixed start, local endpoints."""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from weir.config import WeirConfig
from weir.infra.process import wait_until
from weir.lake import LakeLayout, local_path
from weir.simulate.faults import FaultMix
from weir.simulate.stream import StreamSpec

UTC = timezone.utc
# A fixed clock for the runs under test: records depend on it, never on the wall clock.
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
START_US = int(START.timestamp()) * 1_000_000
LATENESS_US = 10 * 60 * 1_000_000


def spec(
    seed: int = 1,
    devices: int = 50,
    interval_s: float = 1.0,
    mix: str = "default",
    faults: dict | None = None,
) -> StreamSpec:
    return StreamSpec(
        seed=seed,
        devices=devices,
        start_us=START_US,
        interval_us=round(interval_s * 1e6),
        faults=FaultMix(faults) if faults is not None else FaultMix.preset(mix),
        allowed_lateness_us=LATENESS_US,
    )


def with_overrides(config: WeirConfig, **sections: dict) -> WeirConfig:
    """``config`` with some keys of some sections replaced (sources.kinesis as ``kinesis=``)."""
    updates = {}
    sources = config.sources
    for name, values in sections.items():
        if name in ("kafka", "kinesis", "files"):
            sources = sources.model_copy(
                update={name: getattr(sources, name).model_copy(update=values)}
            )
            updates["sources"] = sources
        else:
            updates[name] = getattr(config, name).model_copy(update=values)
    return config.model_copy(update=updates)


@pytest.fixture
def sim_config(weir_config: WeirConfig, tmp_path: Path) -> WeirConfig:
    """The session config with a lake and a state folder (ledgers) of this test's own."""
    return with_overrides(
        weir_config,
        lake={"root": f"file://{tmp_path}/lake", "landing": None},
        infra={"state_dir": str(tmp_path / "state")},
    )


def landing_folder(config: WeirConfig) -> Path:
    return Path(local_path(LakeLayout.from_config(config).landing))


def landed_lines(config: WeirConfig) -> dict[tuple[str, str], bytes]:
    """(file relative to the landing folder, line number) -> the line, for every landed file."""
    folder = landing_folder(config)
    lines = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            relative = str(path.relative_to(folder))
            content = path.read_bytes()
            assert content.endswith(b"\n"), f"{relative} does not end with a newline"
            for number, line in enumerate(content[:-1].split(b"\n"), start=1):
                lines[(relative, str(number))] = line
    return lines


def ledger_coordinates(table) -> dict[tuple[str, str], tuple[str, int]]:
    """(partition, offset) -> (key, payload crc32) of every ledger row."""
    return {
        (row["partition"], row["offset"]): (row["key"], row["payload_crc32"])
        for row in table.select(["partition", "offset", "key", "payload_crc32"]).to_pylist()
    }


def crc(payload: bytes) -> int:
    return zlib.crc32(payload)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text("utf-8"))


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server of this session on 127.0.0.1 and a free port (Kinesis, S3)."""
    from moto.server import ThreadedMotoServer

    from weir.infra.process import free_ports, port_accepts, wait_until

    port = free_ports(1)[0]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_until(lambda: port_accepts(port), timeout=30, what="moto server accepting connections")
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def simulate_infra(
    request: pytest.FixtureRequest,
    weir_config: WeirConfig,
    tmp_path_factory: pytest.TempPathFactory,
):
    """The local stack of `weir infra` (Kafka broker + moto) for this session.

    The shared ``local_infra`` when it is visible from here (tests/infra/conftest.py's is
    visible under tests/infra only); otherwise the same ``private_stack`` in a state folder of
    its own (two stacks must not share one). Slow (the broker's JVM): mark users slow.
    """
    try:
        shared = request.getfixturevalue("local_infra")
    except pytest.FixtureLookupError:
        shared = None
    if shared is not None:
        yield shared
        return
    from weir.infra import private_stack

    with private_stack(weir_config, tmp_path_factory.mktemp("simulate-infra")) as config:
        yield config


# --- Kafka on the local broker -------------------------------------------------------------------
@pytest.fixture
def kafka_config(simulate_infra: WeirConfig, tmp_path: Path) -> WeirConfig:
    """A fresh 3-partition topic of this test's own on the session's local broker."""
    from weir.infra.kafka import create_topic

    topic = f"telemetry-{uuid.uuid4().hex[:8]}"
    create_topic(simulate_infra.sources.kafka.bootstrap_servers, topic, 3, timeout=30)
    return with_overrides(
        simulate_infra,
        kafka={"topic": topic, "partitions": 3},
        lake={"root": f"file://{tmp_path}/lake", "landing": None},
        infra={"state_dir": str(tmp_path / "state")},
    )


def read_topic(config: WeirConfig) -> dict[tuple[str, str], tuple[str, int]]:
    """(partition, offset) -> (key, crc32 of value) of every record in the topic."""
    from confluent_kafka import Consumer, TopicPartition

    kafka = config.sources.kafka
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"check-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        partitions = consumer.list_topics(kafka.topic, timeout=10).topics[kafka.topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(kafka.topic, p), timeout=10)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(kafka.topic, p, 0) for p in partitions])
        records = {}

        def drained() -> bool:
            for message in consumer.consume(num_messages=10_000, timeout=0.5):
                if message.error() is None:
                    key = (str(message.partition()), str(message.offset()))
                    records[key] = (message.key().decode(), crc(message.value()))
            return all(
                sum(1 for part, _ in records if part == str(p)) >= end for p, end in ends.items()
            )

        wait_until(drained, timeout=60, what=f"all of topic {kafka.topic} read back")
        return records
    finally:
        consumer.close()
