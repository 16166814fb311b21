"""Records made in a process of their own (weir.simulate.ahead): the same records, and a run
through it keeps every promise a run in one process keeps."""

from __future__ import annotations

import pickle
import threading
from dataclasses import replace
from datetime import timedelta
from itertools import islice

import pytest

from simulate.conftest import START, crc, landed_lines, ledger_coordinates, spec
from weir.config import WeirConfig
from weir.errors import WeirError
from weir.simulate import ledger as L
from weir.simulate.ahead import GeneratorProcess, decode, encode
from weir.simulate.faults import FaultMix
from weir.simulate.run import (
    GENERATOR,
    HELPER_MIN_RATE,
    HELPER_MIN_RECORDS,
    KAFKA_SENDER,
    SimulateOptions,
    plan_run,
    run_simulation,
)
from weir.simulate.stream import Batch, RecordStream


def never_idle() -> None:
    pass


def test_the_child_makes_the_same_records_in_the_same_order_as_one_process() -> None:
    heavy = spec(seed=7, devices=40, mix="heavy")
    with GeneratorProcess(heavy, ahead_bytes=1 << 20) as generator:
        made_apart = list(islice(generator.batches(never_idle, threading.Event()), 60))
    made_here = list(islice(RecordStream(heavy).timed_batches(), 60))
    assert [time_us for time_us, _ in made_apart] == [time_us for time_us, _ in made_here]
    apart = [record for _, batch in made_apart for record in batch]
    here = [record for _, batch in made_here for record in batch]
    assert len(apart) > 60 * 40  # copies come on top of one reading per device and tick
    assert apart == here
    assert [b.crc32s() for _, b in made_apart] == [b.crc32s() for _, b in made_here]


def test_a_child_that_fails_is_reported_with_its_reason() -> None:
    no_fleet = replace(spec(), devices=0)
    with (
        GeneratorProcess(no_fleet) as generator,
        pytest.raises(WeirError, match="at least one device"),
    ):
        next(generator.batches(never_idle, threading.Event()))


def test_waiting_for_the_child_serves_the_sink_and_a_stop_ends_the_batches() -> None:
    served = []
    stop = threading.Event()

    def idle() -> None:  # the child takes a while to start: the sink is served meanwhile
        served.append(1)
        if len(served) == 3:
            stop.set()

    with GeneratorProcess(spec(devices=20)) as generator:
        list(generator.batches(idle, stop))  # ends: the stop came while waiting
        process = generator._process
    assert len(served) == 3
    assert process.poll() is not None  # closed: the child is gone


def files_options(**options) -> SimulateOptions:
    defaults = dict(devices=50, rate=0, count=3000, sink="files", seed=5, start=START)
    return SimulateOptions(**{**defaults, "faults": FaultMix.preset("heavy"), **options})


def test_a_run_through_the_child_lands_the_same_bytes_and_ledger_as_one_in_one_process(
    sim_config: WeirConfig, tmp_path
) -> None:
    now = START + timedelta(minutes=5)
    apart = run_simulation(sim_config, files_options(helper_process=True), now=now)
    lines_apart = landed_lines(sim_config)
    for path in list(tmp_path.rglob("*.jsonl")):
        path.unlink()
    here = run_simulation(sim_config, files_options(helper_process=False), now=now)
    lines_here = landed_lines(sim_config)
    assert apart.status == here.status == L.COMPLETED
    assert apart.acknowledged == here.acknowledged == 3000
    # Landing files carry a per-run nonce: compare lines in order, not paths.
    assert [line for _, line in sorted(lines_apart.items())] == [
        line for _, line in sorted(lines_here.items())
    ]
    ledger_apart = L.read_ledger(apart.ledger_dir).drop_columns(["partition"]).to_pylist()
    ledger_here = L.read_ledger(here.ledger_dir).drop_columns(["partition"]).to_pylist()
    assert ledger_apart == ledger_here
    coordinates = ledger_coordinates(L.read_ledger(apart.ledger_dir))
    assert {k: v[1] for k, v in coordinates.items()} == {k: crc(v) for k, v in lines_apart.items()}


@pytest.mark.parametrize(
    ("options", "apart"),
    [
        (dict(rate=0, count=HELPER_MIN_RECORDS), True),  # large, at full speed
        (dict(rate=0, count=HELPER_MIN_RECORDS - 1), False),  # too small to pay
        (dict(rate=0, duration_s=60), True),  # full speed for a while
        (dict(rate=HELPER_MIN_RATE, duration_s=60), True),
        (dict(rate=1000), False),  # a live fleet at an everyday rate
        (dict(rate=1000, helper_process=True), True),  # asked for
        (dict(rate=0, count=10**7, helper_process=False), False),
    ],
)
@pytest.mark.parametrize(("sink", "helper"), [("kafka", KAFKA_SENDER), ("files", GENERATOR)])
def test_a_helper_process_shares_the_work_when_the_run_is_large_and_fast_enough(
    sim_config: WeirConfig, options: dict, apart: bool, sink: str, helper: str
) -> None:
    plan = plan_run(sim_config, SimulateOptions(devices=100, sink=sink, **options), START)
    assert plan.helper == (helper if apart else None)


@pytest.mark.parametrize("payloads", [[b'{"a":1}', b'{"b":2}'], [b'{"a":1}', b'{"b":\n2}'], []])
def test_a_batch_crosses_the_pipe_whole_whatever_its_payloads_hold(payloads: list) -> None:
    size = len(payloads)
    batch = Batch(
        7,
        list(range(size)),
        [f"dev-{i}" for i in range(size)],
        payloads,
        [f"id-{i}" for i in range(size)],
        [1_000_000 * i for i in range(size)],
        ["none"] * size,
        [None] * size,
        [False] * size,
        list(range(7, 7 + size)),
    )
    message = pickle.loads(pickle.dumps(encode(123, batch)))
    time_us, crossed = decode(message, [f"dev-{i}" for i in range(size)])
    assert time_us == 123 and crossed.first == 7
    assert list(crossed) == list(batch) and crossed.crc32s() == batch.crc32s()


def test_a_child_that_dies_is_reported_once_what_it_sent_is_used_up() -> None:
    with GeneratorProcess(spec(devices=10), ahead_bytes=4096) as generator:
        batches = generator.batches(never_idle, threading.Event())
        next(batches)
        generator._process.kill()
        with pytest.raises(WeirError, match="ended unexpectedly"):
            for _ in range(100_000):  # what was in the pipe, then the end
                next(batches)
