"""Writer fences: one writer per identity, a second one refused by name, a dead one replaced."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from weir.config import WeirConfig
from weir.control.fences import (
    FenceHeldError,
    FenceKeeper,
    FenceLostError,
    Lease,
    LocalFenceStore,
    S3FenceStore,
    acquire,
    fence_store,
    is_free,
    read_lease,
)

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def lease(**changes: object) -> Lease:
    values = dict(
        fence="kinesis-telemetry",
        holder="host-a:100:abcd1234",
        host="host-a",
        pid=100,
        epoch=3,
        acquired_at=T0,
        heartbeat_at=T0,
        released_at=None,
    )
    values.update(changes)
    return Lease(**values)


@pytest.fixture
def store(tmp_path: Path) -> LocalFenceStore:
    return LocalFenceStore(f"file://{tmp_path}/lake/_control/writer_fences")


@pytest.mark.parametrize(
    ("current", "now", "host", "alive", "free"),
    [
        (None, T0, "host-b", True, True),  # never held
        (lease(released_at=T0), T0, "host-b", True, True),  # released cleanly
        (lease(), T0 + timedelta(seconds=60), "host-b", True, False),  # live, on another host
        (lease(), T0 + timedelta(seconds=91), "host-b", True, True),  # silent past the timeout
        (lease(), T0 + timedelta(seconds=5), "host-a", False, True),  # its process is gone
        (lease(), T0 + timedelta(seconds=5), "host-a", True, False),  # its process still runs
        (
            lease(),
            T0 + timedelta(seconds=5),
            "host-b",
            False,
            False,
        ),  # a pid elsewhere says nothing
    ],
)
def test_a_fence_is_free_when_never_held_released_stale_or_its_process_is_gone(
    current: Lease, now: datetime, host: str, alive: bool, free: bool
) -> None:
    assert is_free(current, now, 90, host, alive=lambda _pid: alive) is free


def test_a_second_writer_is_refused_naming_the_holder_and_since_when(
    store: LocalFenceStore,
) -> None:
    clock = Clock()
    first = acquire(store, "stream-kafka", 90, clock, host="host-a", pid=100)
    clock.now = T0 + timedelta(seconds=30)

    with pytest.raises(FenceHeldError) as refused:
        acquire(store, "stream-kafka", 90, clock, host="host-b", pid=200)

    message = str(refused.value)
    assert first.holder in message and "host host-a, pid 100" in message
    assert "since 2026-03-01T10:00:00Z" in message and "(30s ago)" in message
    assert "timing.writer_stale_after_seconds" in message
    assert read_lease(store, "stream-kafka").holder == first.holder


def test_a_released_fence_is_taken_at_once_with_the_next_epoch(store: LocalFenceStore) -> None:
    with FenceKeeper(store, "kinesis-s", heartbeat_seconds=60, stale_after_seconds=180) as first:
        assert first.lease.epoch == 1
    assert read_lease(store, "kinesis-s").released_at is not None

    second = acquire(store, "kinesis-s", 180, host="host-b", pid=200)
    assert second.epoch == 2


def test_a_stale_holder_is_taken_over_and_its_next_check_stops_it(
    store: LocalFenceStore,
) -> None:
    clock = Clock()
    lost = threading.Event()
    keeper = FenceKeeper(store, "kinesis-s", 3600, 10_800, on_lost=lost.set, clock=clock)
    with keeper:
        clock.now = T0 + timedelta(hours=4)  # no heartbeat for longer than the timeout
        taker = acquire(store, "kinesis-s", 10_800, clock, host="elsewhere", pid=1)
        assert taker.epoch == 2

        with pytest.raises(FenceLostError, match=f"taken over by {taker.holder}"):
            keeper.ensure_held()
        assert lost.is_set()
        keeper.heartbeat()  # a lost keeper writes nothing more
    # Leaving without releasing: the fence stays the taker's.
    current = read_lease(store, "kinesis-s")
    assert (current.holder, current.released_at) == (taker.holder, None)


def test_a_heartbeat_keeps_a_live_holder_and_finds_a_takeover(store: LocalFenceStore) -> None:
    clock = Clock()
    with FenceKeeper(store, "k", 3600, 10_800, clock=clock) as keeper:
        clock.now = T0 + timedelta(hours=2)
        keeper.heartbeat()
        clock.now = T0 + timedelta(hours=4)  # 2 h after the heartbeat: still alive
        with pytest.raises(FenceHeldError):
            acquire(store, "k", 10_800, clock, host="elsewhere", pid=1)
        keeper.ensure_held()

        clock.now = T0 + timedelta(hours=6)
        acquire(store, "k", 10_800, clock, host="elsewhere", pid=1)
        keeper.heartbeat()
        assert keeper.lost is not None and "taken over" in keeper.lost
        with pytest.raises(FenceLostError):
            keeper.raise_if_lost()


def test_a_holder_whose_own_heartbeats_stopped_refuses_to_commit(
    store: LocalFenceStore,
) -> None:
    keeper = FenceKeeper(store, "k", heartbeat_seconds=1000, stale_after_seconds=3000)
    with keeper:
        keeper._confirmed -= 3000  # as if its heartbeats failed for the whole timeout
        with pytest.raises(FenceLostError, match="last confirmed heartbeat is older"):
            keeper.ensure_held()


def test_a_killed_holder_on_this_host_is_replaced_without_waiting(store: LocalFenceStore) -> None:
    import socket

    acquire(store, "k", 3600, host=socket.gethostname(), pid=99_999_999)  # no such process
    taker = acquire(store, "k", 3600)
    assert taker.epoch == 2


def test_of_writers_racing_for_one_fence_exactly_one_wins(store: LocalFenceStore) -> None:
    outcomes: list[object] = []
    start = threading.Barrier(6)

    def contend(n: int) -> None:
        start.wait()
        try:
            outcomes.append(acquire(store, "race", 3600, host=f"host-{n}", pid=n))
        except FenceHeldError as refused:
            outcomes.append(refused)

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if isinstance(o, Lease)]
    assert len(winners) == 1 and len(outcomes) == 6
    assert read_lease(store, "race").holder == winners[0].holder


@pytest.mark.slow
def test_on_s3_a_claim_is_a_conditional_put_of_which_one_wins(local_infra: WeirConfig) -> None:
    from weir.aws import aws_client

    s3 = aws_client(local_infra, "s3")
    bucket = f"weir-fences-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    store = fence_store(local_infra, f"s3a://{bucket}/lake/_control/writer_fences")
    assert isinstance(store, S3FenceStore)

    assert store.create("f", "epoch-1.json", b"a") is True
    assert store.create("f", "epoch-1.json", b"b") is False
    assert store.read("f", "epoch-1.json") == b"a"

    first = acquire(store, "stream-kafka", 90, host="host-a", pid=1)
    with pytest.raises(FenceHeldError, match=first.holder):
        acquire(store, "stream-kafka", 90, host="host-b", pid=2)
    assert read_lease(store, "stream-kafka").epoch == first.epoch == 1
