"""Kafka's producer in a process of its own (weir.simulate.transport): a run through it keeps
every promise a run in one process keeps."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from simulate.conftest import START, crc, ledger_coordinates, read_topic, spec, with_overrides
from weir.config import WeirConfig
from weir.errors import WeirError
from weir.simulate import ledger as L
from weir.simulate.faults import FaultMix
from weir.simulate.run import SimulateOptions, make_sink, run_simulation
from weir.simulate.stream import Batch, stream_records
from weir.simulate.transport import KafkaSenderProcess, _InFlight, _Settlements


class Replies:
    """Stands in for the child's frame writer: keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple] = []

    def put(self, message: tuple) -> None:
        self.messages.append(message)


def test_what_the_child_settles_reaches_the_ledger_with_the_records_the_parent_kept(
    tmp_path: Path,
) -> None:
    records = stream_records(spec(seed=4, devices=6, mix="heavy"), 12)
    kept = [Batch.of(records[:7]), Batch.of(records[7:])]
    # The child's batches carry payloads and CRCs only; it settles them, with one failure.
    sendable = [
        Batch(
            b.first,
            b.devices,
            b.keys,
            b.payloads,
            *[[None] * len(b)] * 6,
            crc32s=[crc(p) for p in b.payloads],
        )
        for b in kept
    ]
    replies = Replies()
    settlements = _Settlements(replies)
    settlements.acknowledged_batch(sendable[0], [0] * 7, list(range(10, 17)))
    settlements.acknowledged_batch(
        sendable[1], [1] * 5, [20, 21, -1, 22, 23], [True, True, False, True, True]
    )
    settlements.failed(sendable[1][2], "Local: Message timed out")

    ledger = L.Ledger(tmp_path / "run", {"run_id": "t"})
    in_flight = _InFlight()
    for batch in kept:
        in_flight.add(batch)
    for message in replies.messages:
        in_flight.settle(message, ledger)
    ledger.close(L.COMPLETED)

    assert in_flight.records == 0
    rows = L.read_ledger(tmp_path / "run").to_pylist()
    expected = [r for r in records if r.seq != records[9].seq]
    assert [row["seq"] for row in rows] == [r.seq for r in expected]
    assert [row["event_id"] for row in rows] == [r.event_id for r in expected]
    assert [row["payload_crc32"] for row in rows] == [crc(r.payload) for r in expected]
    assert [row["offset"] for row in rows] == [str(o) for o in [*range(10, 17), 20, 21, 22, 23]]
    (failure,) = L.read_failures(tmp_path / "run")
    assert failure["seq"] == records[9].seq and failure["event_id"] == records[9].event_id
    assert failure["error"] == "Local: Message timed out"


def test_a_settlement_out_of_the_order_sent_fails_loudly(tmp_path: Path) -> None:
    records = stream_records(spec(seed=4, devices=4), 8)
    in_flight = _InFlight()
    in_flight.add(Batch.of(records[:4]))
    in_flight.add(Batch.of(records[4:]))
    ledger = L.Ledger(tmp_path / "run", {"run_id": "t"})
    replies = Replies()
    _Settlements(replies).acknowledged_batch(Batch.of(records[4:]), [0] * 4, [1, 2, 3, 4])
    with pytest.raises(WeirError, match="out of order"):
        in_flight.settle(replies.messages[0], ledger)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_a_sender_that_finds_no_broker_fails_before_anything_is_written(
    sim_config: WeirConfig, tmp_path: Path
) -> None:
    nowhere = with_overrides(sim_config, kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    options = SimulateOptions(devices=10, rate=0, count=10, sink="kafka", helper_process=True)
    with pytest.raises(WeirError, match=r"no Kafka broker answered at 127\.0\.0\.1"):
        run_simulation(nowhere, options)
    assert not L.ledger_root(nowhere.infra.state_dir).exists()


def second_topic(config: WeirConfig) -> WeirConfig:
    from weir.infra.kafka import create_topic

    topic = f"telemetry-{uuid.uuid4().hex[:8]}"
    create_topic(config.sources.kafka.bootstrap_servers, topic, 3, timeout=30)
    return with_overrides(config, kafka={"topic": topic})


@pytest.mark.slow
def test_a_run_through_the_sender_lands_the_same_records_and_ledger_as_one_in_one_process(
    kafka_config: WeirConfig,
) -> None:
    now = START + timedelta(minutes=5)
    options = dict(devices=60, rate=0, count=6000, sink="kafka", seed=8, start=START)
    heavy = FaultMix.preset("heavy")
    apart = run_simulation(
        kafka_config, SimulateOptions(**options, faults=heavy, helper_process=True), now=now
    )
    alone_config = second_topic(kafka_config)
    alone = run_simulation(
        alone_config, SimulateOptions(**options, faults=heavy, helper_process=False), now=now
    )
    assert apart.status == alone.status == L.COMPLETED
    assert apart.acknowledged == alone.acknowledged == 6000
    ledger_apart = L.read_ledger(apart.ledger_dir)
    ledger_alone = L.read_ledger(alone.ledger_dir)
    # Fresh topics, the same keys in the same order: the same partitions and offsets too.
    assert ledger_apart.equals(ledger_alone)
    assert ledger_coordinates(ledger_apart) == read_topic(kafka_config)
    assert apart.manifest["fates"] == alone.manifest["fates"]


@pytest.mark.slow
def test_a_sender_that_dies_leaves_only_acknowledged_records_in_the_ledger(
    kafka_config: WeirConfig,
) -> None:
    sinks: list = []

    def remember(*args):
        sinks.append(make_sink(*args))
        return sinks[-1]

    def kill_the_sender_midway() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # (the sink's ledger is a stand-in until the run's ledger exists)
            if sinks and getattr(sinks[0].ledger, "acknowledged_count", 0) >= 20_000:
                os.kill(sinks[0]._process.pid, signal.SIGKILL)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_the_sender_midway)
    killer.start()
    options = SimulateOptions(
        devices=500, rate=0, count=2_000_000, sink="kafka", seed=3, helper_process=True
    )
    with pytest.raises(WeirError, match="sender process ended unexpectedly"):
        run_simulation(kafka_config, options, sink_factory=remember)
    killer.join()
    assert isinstance(sinks[0], KafkaSenderProcess)

    (folder,) = L.ledger_root(kafka_config.infra.state_dir).iterdir()
    manifest = L.read_manifest(folder)
    assert manifest["status"] == L.FAILED
    assert manifest["unconfirmed"] > 0
    assert manifest["acknowledged"] + manifest["unconfirmed"] == manifest["generated"]
    # Whatever the ledger lists, the broker holds, byte for byte (it may hold more: records
    # delivered after the last settlement the dead child sent).
    listed = ledger_coordinates(L.read_ledger(folder))
    in_topic = read_topic(kafka_config)
    assert len(listed) == manifest["acknowledged"] > 0
    assert {coordinate: in_topic.get(coordinate) for coordinate in listed} == listed
