"""One simulator run: plan it from the options, pace the stream into a sink, keep the ledger.

The event times come from ``start`` and the report interval only, never from the wall clock,
so a seed and a start give the same records whatever the machine's speed. The wall clock
only paces sending (``rate``) and guards against running ahead of it: a live run never sends
a reading more than :data:`AHEAD_LIMIT_US` ahead of now, so an event the ledger calls valid
cannot become a ``future_event`` at ingestion (only the injected future events are).

Stopping (Ctrl-C, SIGTERM, or ``stop`` set by a caller) ends generation at a chunk boundary,
flushes the sink and closes the ledger: it then holds exactly what the sink acknowledged.
"""

from __future__ import annotations

import gc
import hashlib
import math
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from weir.config import ConfigError, WeirConfig
from weir.contract.rules import FUTURE_TOLERANCE_MINUTES
from weir.simulate import ledger as L
from weir.simulate.ahead import GeneratorProcess
from weir.simulate.faults import DEFAULT_PRESET, FaultMix
from weir.simulate.sinks import (
    FILES,
    KAFKA,
    KINESIS,
    SINKS,
    FilesSink,
    KafkaSink,
    KinesisSink,
    Sink,
)
from weir.simulate.stream import RecordStream, StreamSpec
from weir.simulate.transport import KafkaSenderProcess

# Live runs stay this close to the wall clock (the contract's future tolerance, less a margin).
AHEAD_LIMIT_US = (FUTURE_TOLERANCE_MINUTES * 60 - 30) * 1_000_000
DEFAULT_BACKFILL_INTERVAL_S = 60.0
DEFAULT_INTERVAL_S = 1.0
DEFAULT_ROLL_SECONDS = 60.0  # Firehose's shortest buffering interval
DEFAULT_BACKFILL_ROLL_SECONDS = 900.0  # and its longest
# Time allowed to deliver what is in flight when a run ends or is stopped.
FLUSH_TIMEOUT_S = 90.0
_PACE_SLICES_PER_SECOND = 50
# A helper process starts in about half a second and pays from about this many records at
# full speed (or this rate) on: below, one process does everything.
HELPER_MIN_RECORDS = 200_000
HELPER_MIN_RATE = 50_000
# Which helper: Kafka's producer runs in one (weir.simulate.transport); for the other sinks
# the records are made in one (weir.simulate.ahead).
KAFKA_SENDER, GENERATOR = "kafka-sender", "generator"


@dataclass(frozen=True)
class SimulateOptions:
    """What `weir simulate` takes (defaults as on the command line)."""

    devices: int = 100
    rate: float = 100.0  # records per second; 0 = as fast as possible
    count: Optional[int] = None
    duration_s: Optional[float] = None
    sink: Optional[str] = None  # kafka, or files with backfill_days
    seed: Optional[int] = None  # None: a random seed, recorded in the ledger
    start: Optional[datetime] = None  # the first tick (backfill: the end of the history)
    interval_s: Optional[float] = None  # between two reports of one device
    faults: FaultMix = field(default_factory=lambda: FaultMix.preset(DEFAULT_PRESET))
    backfill_days: Optional[float] = None
    roll_seconds: Optional[float] = None  # files sink: seconds of the run's clock per file
    # Split the work with a helper process (Plan.helper); None: when the run is large and
    # fast enough for it to pay.
    helper_process: Optional[bool] = None


@dataclass(frozen=True)
class Plan:
    """Options resolved against the clock and config: what the run will do."""

    spec: StreamSpec
    sink: str
    rate: float
    count: Optional[int]  # records to send; None = until stopped (or end_us / wall_limit_s)
    end_us: Optional[int]  # backfill: stop at the tick reaching this time
    wall_limit_s: Optional[float]  # --duration at --rate 0
    live: bool  # keep within AHEAD_LIMIT_US of the wall clock
    roll_seconds: float
    helper_process: Optional[bool] = None  # SimulateOptions.helper_process

    @property
    def helper(self) -> Optional[str]:
        """The helper process a run at full speed (or a high rate), expected to send enough
        records for it to pay, splits its work with: :data:`KAFKA_SENDER` runs the producer
        (weir.simulate.transport), :data:`GENERATOR` makes the records (weir.simulate.ahead).
        None: one process does everything."""
        if self.helper_process is None:
            expected = self.expected_records
            pays = not (self.rate and self.rate < HELPER_MIN_RATE) and (
                expected is None or expected >= HELPER_MIN_RECORDS
            )
        else:
            pays = self.helper_process
        if not pays:
            return None
        return KAFKA_SENDER if self.sink == KAFKA else GENERATOR

    @property
    def expected_records(self) -> Optional[int]:
        if self.count is not None:
            return self.count
        if self.end_us is not None:
            ticks = math.ceil((self.end_us - self.spec.start_us) / self.spec.interval_us)
            copies = self.spec.faults.copy_rate  # a share of all records, on top of readings
            return round(ticks * self.spec.devices / (1.0 - copies))
        return None


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ConfigError("--start", f"{moment.isoformat()} has no time zone; add Z or +HH:MM")
    return moment.astimezone(timezone.utc)


def _micros(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def plan_run(config: WeirConfig, options: SimulateOptions, now: datetime) -> Plan:
    """Validate the options (ConfigError naming the option) and resolve every default."""
    if options.devices < 1:
        raise ConfigError("--devices", "at least one device")
    if options.rate < 0 or not math.isfinite(options.rate):
        raise ConfigError("--rate", "events per second must be >= 0 (0 = as fast as possible)")
    if options.count is not None and options.count < 0:
        raise ConfigError("--count", "must be >= 0")
    if options.duration_s is not None and options.duration_s <= 0:
        raise ConfigError("--duration", "must be positive")
    if options.count is not None and options.duration_s is not None:
        raise ConfigError("--count", "give --count or --duration, not both")
    backfill = options.backfill_days
    if backfill is not None and not 0 < backfill <= 3660:
        raise ConfigError("--backfill", "days of history must be in (0, 3660]")
    if backfill is not None and options.duration_s is not None:
        raise ConfigError("--duration", "a backfill runs until its history is written; use --count")
    sink = options.sink or (FILES if backfill else KAFKA)
    if sink not in SINKS:
        raise ConfigError("--sink", f"unknown sink {sink!r}; use {' | '.join(SINKS)}")

    if options.interval_s is not None:
        interval_s = options.interval_s
    elif backfill:
        interval_s = DEFAULT_BACKFILL_INTERVAL_S
    elif options.rate > 0:
        interval_s = options.devices / options.rate  # the fleet's clock keeps up with the wall's
    else:
        interval_s = DEFAULT_INTERVAL_S
    interval_us = round(interval_s * 1e6)
    if not 1 <= interval_us <= 86_400_000_000:
        raise ConfigError("--interval", "seconds between reports must be in [0.000001, 86400]")

    now_us = _micros(_utc(now))
    floor_us = now_us - now_us % 60_000_000
    rate = 0.0 if backfill else options.rate
    count = options.count
    wall_limit_s = None
    if options.duration_s is not None:
        if rate > 0:
            count = round(rate * options.duration_s)  # deterministic: the same records
        elif not backfill:
            wall_limit_s = options.duration_s
    if options.start is not None:
        start_us = _micros(_utc(options.start))
        if start_us > now_us + AHEAD_LIMIT_US:
            raise ConfigError(
                "--start", "is in the future: its events would be quarantined as future_event"
            )
    elif rate == 0 and count is not None and not backfill:
        # As fast as possible: replay the stretch of time that ends now, so the records
        # never run ahead of the wall clock.
        start_us = floor_us - math.ceil(count / options.devices) * interval_us
    else:
        start_us = floor_us
    end_us = None
    if backfill:
        end_us = start_us
        start_us -= round(backfill * 86_400e6)
    spec = StreamSpec(
        seed=options.seed if options.seed is not None else 0,
        devices=options.devices,
        start_us=start_us,
        interval_us=interval_us,
        faults=options.faults,
        allowed_lateness_us=config.timing.allowed_lateness_minutes * 60_000_000,
    )
    roll = options.roll_seconds or (
        DEFAULT_BACKFILL_ROLL_SECONDS if backfill else DEFAULT_ROLL_SECONDS
    )
    if roll <= 0:
        raise ConfigError("--roll-seconds", "must be positive")
    return Plan(
        spec,
        sink,
        rate,
        count,
        end_us,
        wall_limit_s,
        live=not backfill,
        roll_seconds=roll,
        helper_process=options.helper_process,
    )


@dataclass(frozen=True)
class RunResult:
    run_id: str
    ledger_dir: Path
    status: str  # completed | interrupted | failed
    sink: str
    target: str
    generated: int  # records handed to the sink
    acknowledged: int
    failed: int
    unconfirmed: int  # neither acknowledged nor failed when the flush deadline passed
    seconds: float
    manifest: dict[str, Any]

    @property
    def events_per_second(self) -> float:
        return self.acknowledged / self.seconds if self.seconds > 0 else 0.0


SinkFactory = Callable[[WeirConfig, Plan, L.Ledger, str], Sink]


def make_sink(config: WeirConfig, plan: Plan, ledger: Any, nonce: str) -> Sink:
    if plan.sink == KAFKA:
        if plan.helper == KAFKA_SENDER:
            return KafkaSenderProcess(config, ledger, plan.spec)
        return KafkaSink(config, ledger)
    if plan.sink == KINESIS:
        return KinesisSink(config, ledger)
    return FilesSink(config, ledger, nonce, roll_seconds=plan.roll_seconds)


class _LedgerHandle:
    """Lets a sink be built (and fail) before the ledger folder exists."""

    def __init__(self) -> None:
        self.ledger: Optional[L.Ledger] = None

    def acknowledged(self, record, partition, offset) -> None:
        self.ledger.acknowledged(record, partition, offset)

    def acknowledged_many(self, rows) -> None:
        self.ledger.acknowledged_many(rows)

    def acknowledged_lines(self, records, path) -> None:
        self.ledger.acknowledged_lines(records, path)

    def acknowledged_batch(self, batch, partitions, offsets, acked=None) -> None:
        self.ledger.acknowledged_batch(batch, partitions, offsets, acked)

    def failed(self, record, error) -> None:
        self.ledger.failed(record, error)


def _iso(micros: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=micros)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_run_id(root: Path, now: datetime, tag: str) -> str:
    base = f"{now.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{tag}"
    run_id, number = base, 1
    while (root / run_id).exists():
        number += 1
        run_id = f"{base}-{number}"
    return run_id


def run_simulation(
    config: WeirConfig,
    options: SimulateOptions,
    *,
    stop: Optional[threading.Event] = None,
    progress: Optional[Any] = None,
    now: Optional[datetime] = None,
    sink_factory: SinkFactory = make_sink,
) -> RunResult:
    """Generate, send and record one run; see the module doc. ``progress``: a rich Progress."""
    stop = stop or threading.Event()
    now = now or datetime.now(timezone.utc)
    if options.seed is None:
        options = _with_seed(options, secrets.randbelow(2**31))
    plan = plan_run(config, options, now)
    spec = plan.spec
    stream = RecordStream(spec)
    root = L.ledger_root(config.infra.state_dir)
    run_id = _new_run_id(root, now, stream.tag)

    handle = _LedgerHandle()
    # Landing files carry a per-run nonce: a replay of the same spec adds files, never
    # overwrites the first run's.
    nonce = hashlib.blake2b(run_id.encode(), digest_size=3).hexdigest()
    sink = sink_factory(config, plan, handle, nonce)
    manifest = {
        "run_id": run_id,
        "sink": plan.sink,
        "target": sink.target,
        "spec": {
            "seed": spec.seed,
            "devices": spec.devices,
            "start": _iso(spec.start_us),
            "interval_s": spec.interval_us / 1e6,
            "allowed_lateness_minutes": config.timing.allowed_lateness_minutes,
            "faults": spec.faults.as_dict(),
            "tag": stream.tag,
        },
        "options": {
            "rate": plan.rate,
            "count": plan.count,
            "duration_s": options.duration_s,
            "backfill_days": options.backfill_days,
            "end": _iso(plan.end_us) if plan.end_us is not None else None,
        },
    }
    ledger = handle.ledger = L.Ledger(root / run_id, manifest, background_writes=True)
    if hasattr(sink, "ledger"):
        sink.ledger = ledger  # direct calls from here on (the hot path)

    task = None
    if progress is not None:
        task = progress.add_task(
            f"{plan.sink} <- {spec.devices} devices", total=plan.expected_records
        )
    started = time.monotonic()
    sent = [0]  # records handed to the sink, kept if the loop raises
    crashed = False
    # Nothing the loop allocates forms a cycle; the cyclic collector would only re-scan the
    # ledger's pending rows over and over (a third of the CPU time at high rates).
    collecting = gc.isenabled()
    gc.disable()
    try:
        if plan.helper == GENERATOR:
            with GeneratorProcess(spec) as generator:
                batches = generator.batches(idle=sink.poll, stop=stop)
                _pump(plan, batches, sink, stop, started, progress, task, sent)
        else:
            _pump(plan, stream.timed_batches(), sink, stop, started, progress, task, sent)
    except BaseException:
        crashed = True
        raise
    finally:
        if collecting:
            gc.enable()
        generated = sent[0]
        unconfirmed = sink.flush(FLUSH_TIMEOUT_S)
        sink.close()
        seconds = time.monotonic() - started
        unconfirmed = max(unconfirmed, generated - ledger.confirmed)
        if crashed or ledger.failed_count or unconfirmed:
            status = L.FAILED
        elif stop.is_set():
            status = L.INTERRUPTED
        else:
            status = L.COMPLETED
        final = ledger.close(
            status,
            generated=generated,
            unconfirmed=unconfirmed,
            seconds=round(seconds, 3),
            events_per_second=round(ledger.acknowledged_count / seconds, 1) if seconds else None,
        )
        if progress is not None and task is not None:
            progress.update(task, completed=generated)
    return RunResult(
        run_id=run_id,
        ledger_dir=root / run_id,
        status=status,
        sink=plan.sink,
        target=sink.target,
        generated=generated,
        acknowledged=ledger.acknowledged_count,
        failed=ledger.failed_count,
        unconfirmed=unconfirmed,
        seconds=seconds,
        manifest=final,
    )


def _with_seed(options: SimulateOptions, seed: int) -> SimulateOptions:
    return replace(options, seed=seed)


def _pump(plan, batches, sink, stop, started, progress, task, counter: list) -> None:
    """The loop: ``(tick time, batch)`` pairs into the sink, paced, guarded, stoppable;
    counts into ``counter[0]``."""
    rate, count, interval_us = plan.rate, plan.count, plan.spec.interval_us
    step = max(1, int(rate / _PACE_SLICES_PER_SECOND)) if rate else None
    sent = 0
    shown = started
    if count == 0:
        return
    for time_us, records in batches:
        if plan.end_us is not None and time_us >= plan.end_us:
            break
        if count is not None and count - sent < len(records):
            records = records[: count - sent]
        if plan.live:
            _keep_behind_wall_clock(time_us + interval_us, sink, stop)
        slice_size = step or len(records)
        for first in range(0, len(records), slice_size):
            if rate:
                _wait_until(started + sent / rate, sink, stop)
            if stop.is_set():
                return
            part = records if slice_size >= len(records) else records[first : first + slice_size]
            sink.send(part, time_us)
            sent += len(part)
            counter[0] = sent
        if progress is not None:
            moment = time.monotonic()
            if moment - shown >= 0.2:
                shown = moment
                progress.update(task, completed=sent)
        if stop.is_set() or (count is not None and sent >= count):
            break
        if plan.wall_limit_s is not None and time.monotonic() - started >= plan.wall_limit_s:
            break


def _wait_until(deadline: float, sink: Sink, stop: threading.Event) -> None:
    """Serve the sink's acknowledgements until ``deadline`` (monotonic) or a stop."""
    while not stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        sink.poll()
        stop.wait(min(remaining, 0.05))


def _keep_behind_wall_clock(newest_event_us: int, sink: Sink, stop: threading.Event) -> None:
    while not stop.is_set():
        ahead_us = newest_event_us - time.time_ns() // 1000 - AHEAD_LIMIT_US
        if ahead_us <= 0:
            return
        sink.poll()
        stop.wait(min(ahead_us / 1e6, 0.5))
