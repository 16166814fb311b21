"""`weir infra up | status | down` against real processes, and the failures a user can meet."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer, Producer

from weir import infra
from weir.cli import main
from weir.config import WeirConfig
from weir.errors import EXIT_BAD_CONFIG, EXIT_OK, EXIT_RUNTIME_FAILURE, WeirError
from weir.infra.kafka import KafkaBroker
from weir.infra.process import (
    DeadlineExceededError,
    ManagedProcess,
    free_ports,
    pid_alive,
    port_is_free,
    wait_until,
)


def stack_on_free_ports(base: WeirConfig, state_dir: Path) -> WeirConfig:
    kafka_port, controller_port, aws_port = free_ports(3)
    return infra.stack_config(
        base,
        state_dir,
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        aws_port=aws_port,
    )


def write_conf(config: WeirConfig, path: Path) -> str:
    path.write_text(yaml.safe_dump(config.model_dump()))
    return str(path)


def produce(config: WeirConfig, count: int) -> set[str]:
    """``count`` contract-shaped events on the telemetry topic, keyed by device; their ids."""
    producer = Producer({"bootstrap.servers": config.sources.kafka.bootstrap_servers})
    ids = set()
    for n in range(count):
        event = {"event_id": f"e{n}", "device_id": f"dev-{n % 8}", "event_time": 1_700_000_000_000}
        producer.produce(config.sources.kafka.topic, json.dumps(event), key=event["device_id"])
        ids.add(event["event_id"])
    assert producer.flush(30) == 0, "not every message was delivered"
    return ids


def consume(config: WeirConfig, group: str, expected: int) -> tuple[set[str], set[int]]:
    """Read the topic from the earliest offset until ``expected`` messages (with a deadline)."""
    consumer = Consumer(
        {
            "bootstrap.servers": config.sources.kafka.bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([config.sources.kafka.topic])
    ids: set[str] = set()
    partitions: set[int] = set()

    def all_read() -> bool:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            ids.add(json.loads(message.value())["event_id"])
            partitions.add(message.partition())
        return len(ids) >= expected

    try:
        wait_until(all_read, timeout=60, interval=0, what="consume the produced events")
    finally:
        consumer.close()
    return ids, partitions


@pytest.fixture
def own_stack(weir_config: WeirConfig, tmp_path: Path) -> Iterator[WeirConfig]:
    """A stack config of this test's own (not the session's `local_infra`); always stopped."""
    config = stack_on_free_ports(weir_config, tmp_path / "state")
    yield config
    infra.down(config)


@pytest.mark.slow
def test_up_status_produce_consume_down_and_up_again(
    own_stack: WeirConfig, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    conf = write_conf(own_stack, tmp_path / "weir.yaml")
    state_dir = Path(own_stack.infra.state_dir)

    assert main(["infra", "up", "--conf", conf]) == EXIT_OK
    first = {s.name: s.pid for s in infra.status(own_stack)}
    assert all(pid_alive(pid) for pid in first.values())

    # up twice: nothing restarted, resources found, not recreated
    reports = infra.up(own_stack)
    assert [(r.name, r.started, r.pid) for r in reports] == [
        ("kafka", False, first["kafka"]),
        ("aws", False, first["aws"]),
    ]
    assert "exists" in reports[0].resources[0]

    capsys.readouterr()
    assert main(["infra", "status", "--conf", conf]) == EXIT_OK
    shown = capsys.readouterr().out
    assert shown.count("healthy") == 2
    assert str(own_stack.infra.kafka_port) in shown
    details = {s.name: s.detail for s in infra.status(own_stack)}
    assert f"topic telemetry: {own_stack.sources.kafka.partitions} partitions" in details["kafka"]
    assert f"stream telemetry: {own_stack.sources.kinesis.shards} shards" in details["aws"]

    produced = produce(own_stack, 200)
    consumed, partitions = consume(own_stack, "lifecycle", expected=len(produced))
    assert consumed == produced
    assert len(partitions) > 1, "keys should spread over the topic's partitions"

    assert main(["infra", "down", "--conf", conf]) == EXIT_OK
    assert not any(pid_alive(pid) for pid in first.values())
    assert not list(state_dir.glob("*.pid"))
    for port in (own_stack.infra.kafka_port, own_stack.infra.aws_port):
        assert port_is_free(port)
    assert {s.state for s in infra.status(own_stack)} == {"stopped"}
    assert main(["infra", "status", "--conf", conf]) == EXIT_RUNTIME_FAILURE
    assert infra.down(own_stack) == [("aws", None), ("kafka", None)]

    # the broker's data lives in the state folder: it survives a restart
    assert all(r.started for r in infra.up(own_stack))
    again, _ = consume(own_stack, "after-restart", expected=len(produced))
    assert again == produced


@pytest.mark.slow
def test_broker_that_fails_to_start_is_reported_with_its_log(own_stack: WeirConfig) -> None:
    broker = KafkaBroker(own_stack)
    broker.data_dir.mkdir(parents=True)
    # storage formatted for another node: the broker refuses it and exits
    (broker.data_dir / "meta.properties").write_text(
        "version=1\nnode.id=7\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\ndirectory.id=AAAAAAAAAAAAAAAAAAAAAA\n"
    )
    with pytest.raises(WeirError) as failure:
        infra.up(own_stack)
    message = str(failure.value)
    assert "Kafka broker" in message
    assert "last lines of" in message
    assert "node" in message.split("last lines of", 1)[1].lower()
    # what this `up` had started (the AWS endpoint) was stopped again
    state_dir = Path(own_stack.infra.state_dir)
    assert not list(state_dir.glob("*.pid"))
    assert port_is_free(own_stack.infra.aws_port)


def test_a_taken_port_fails_before_anything_starts(
    own_stack: WeirConfig, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", own_stack.infra.kafka_port))
        squatter.listen()
        conf = write_conf(own_stack, tmp_path / "weir.yaml")
        assert main(["infra", "up", "--conf", conf]) == EXIT_RUNTIME_FAILURE
        status = {s.name: s.state for s in infra.status(own_stack)}
    assert "infra.kafka_port" in capsys.readouterr().err
    assert status == {"kafka": "port taken", "aws": "stopped"}
    assert not list(Path(own_stack.infra.state_dir).glob("*.pid"))


def test_missing_java_is_a_clear_failure(
    own_stack: WeirConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(WeirError, match="Java not found"):
        infra.up(own_stack)
    assert not list(Path(own_stack.infra.state_dir).glob("*.pid"))


def test_clients_pointing_elsewhere_is_a_config_error(
    own_stack: WeirConfig, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    document = own_stack.model_dump()
    document["sources"]["kafka"]["bootstrap_servers"] = "127.0.0.1:1"
    conf = tmp_path / "weir.yaml"
    conf.write_text(yaml.safe_dump(document))
    assert main(["infra", "up", "--conf", str(conf)]) == EXIT_BAD_CONFIG
    assert "sources.kafka.bootstrap_servers" in capsys.readouterr().err


def test_down_never_signals_a_pid_that_is_no_longer_ours(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        process = ManagedProcess("kafka", tmp_path, signature="kafka.Kafka")
        process.pid_file.write_text(f"{stranger.pid}\n")
        assert process.running_pid() is None
        assert process.stop(timeout=5) is None
        assert stranger.poll() is None, "a process Weir did not start was signalled"
        assert not process.pid_file.exists()
    finally:
        os.kill(stranger.pid, signal.SIGKILL)
        stranger.wait()


def test_stop_terminates_our_process_and_removes_its_pid_file(tmp_path: Path) -> None:
    process = ManagedProcess("sleeper", tmp_path, signature="sleep")
    pid = process.start(["sleep", "60"])
    assert process.running_pid() == pid
    assert process.stop(timeout=10) == pid
    assert not pid_alive(pid)
    assert not process.pid_file.exists()


def test_wait_until_raises_at_its_deadline() -> None:
    with pytest.raises(DeadlineExceededError, match="never true"):
        wait_until(lambda: False, timeout=0.3, what="never true")
    assert wait_until(lambda: 42, timeout=1, what="at once") == 42


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv")
def test_a_private_server_stops_when_its_parent_dies(tmp_path: Path) -> None:
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from weir.infra.process import ManagedProcess; "
            "p = ManagedProcess('sleeper', Path(sys.argv[1]), signature='sleep'); "
            "print(p.start(['sleep', '60'], stop_with_parent=True), flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    server_pid = int(starter.stdout.readline())
    cmdline = Path(f"/proc/{server_pid}/cmdline")
    # the death signal is armed once setpriv has exec'd the server
    wait_until(lambda: b"setpriv" not in cmdline.read_bytes(), timeout=10, what="exec")
    starter.kill()  # no clean-up code runs: only the kernel's parent-death signal
    starter.wait()
    wait_until(lambda: not pid_alive(server_pid), timeout=10, what="orphan stopped")


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """The storage tool would read `--cluster-id -Ab...` as a missing value (one id in 64)."""
    import uuid

    from weir.infra import kafka

    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=bytes(16))])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(draws))

    assert kafka.new_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"
