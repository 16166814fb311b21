"""`weir simulate`: a device fleet into Kafka, Kinesis or the landing folder, with a ledger."""

from __future__ import annotations

import os
import signal
import threading
from datetime import datetime
from typing import Optional

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from weir.cli.app import app, conf_option, console, errors, load
from weir.config import ConfigError
from weir.entry import parse_duration
from weir.errors import WeirError


def parse_start(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            "--start", f"{text!r} is not ISO-8601 such as 2024-06-01T12:00:00Z"
        ) from None


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed or 0:>10,.0f} rec/s")


def interactive() -> bool:
    """Progress bars on a terminal only, never under CI=true."""
    return console.is_terminal and os.environ.get("CI", "").lower() not in ("true", "1")


@app.command()
def simulate(
    conf: str = conf_option(),
    devices: int = typer.Option(100, help="devices in the fleet (70% vehicles, 30% sensors)"),
    rate: float = typer.Option(100.0, help="records per second; 0 = as fast as possible"),
    duration: Optional[str] = typer.Option(None, help="how long: 90s, 5m, 2h (or use --count)"),
    count: Optional[int] = typer.Option(None, help="records to send (default: until Ctrl-C)"),
    sink: Optional[str] = typer.Option(
        None, help="kafka | kinesis | files (default kafka; files with --backfill)"
    ),
    seed: Optional[int] = typer.Option(
        None, help="same seed and --start => same records, byte for byte (default: random)"
    ),
    start: Optional[str] = typer.Option(
        None, help="ISO time of the first reading (default: now, floored to the minute)"
    ),
    interval: Optional[float] = typer.Option(
        None, help="seconds between two reports of a device (default: devices/rate)"
    ),
    fault_mix: str = typer.Option("default", "--fault-mix", help="preset: default | none | heavy"),
    faults: str = typer.Option(
        "", "--faults", help="per-kind rates over the preset, e.g. duplicate=0.05,late=0"
    ),
    backfill: Optional[float] = typer.Option(
        None, help="DAYS of history before --start, written as fast as possible"
    ),
    roll_seconds: Optional[float] = typer.Option(
        None, help="files sink: seconds of event clock per landing file (default 60; 900 backfill)"
    ),
) -> None:
    """Simulate a device fleet with a fault mix into Kafka, Kinesis or the landing folder.

    Every run writes a ground-truth ledger under <infra.state_dir>/ledgers/<run_id>/: each
    record the sink acknowledged and the fate weir.contract must give it. Ctrl-C stops
    cleanly: the sink is flushed and the ledger holds exactly what was acknowledged.
    """
    config = load(conf)
    from weir.simulate.faults import FaultMix
    from weir.simulate.run import SimulateOptions, run_simulation

    options = SimulateOptions(
        devices=devices,
        rate=rate,
        count=count,
        duration_s=parse_duration(duration) if duration is not None else None,
        sink=sink,
        seed=seed,
        start=parse_start(start) if start is not None else None,
        interval_s=interval,
        faults=FaultMix.parse(fault_mix, faults),
        backfill_days=backfill,
        roll_seconds=roll_seconds,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: give up on flushing
        stop.set()
        errors.print("stopping: flushing the sink and closing the ledger (Ctrl-C again to abort)")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not interactive(),
    )
    try:
        with progress:
            result = run_simulation(config, options, stop=stop, progress=progress)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _report(result)
    if result.failed or result.unconfirmed:
        raise WeirError(
            f"{result.failed} records failed and {result.unconfirmed} were never confirmed by "
            f"{result.sink}; see {result.ledger_dir}"
        )


def _report(result) -> None:
    manifest = result.manifest
    table = Table(
        "", "", title=f"weir simulate: run {result.run_id} ({result.status})", show_header=False
    )
    table.add_row("sink", f"{result.sink} -> {result.target}")
    table.add_row("seed / start", f"{manifest['spec']['seed']} / {manifest['spec']['start']}")
    table.add_row("records sent", str(result.generated))
    table.add_row("acknowledged", str(result.acknowledged))
    table.add_row("failed / unconfirmed", f"{result.failed} / {result.unconfirmed}")
    table.add_row("rate", f"{result.events_per_second:,.0f} records/s over {result.seconds:.1f}s")
    for fate, number in manifest.get("fates", {}).items():
        table.add_row(f"fate: {fate}", str(number))
    table.add_row("ledger", str(result.ledger_dir))
    console.print(table)
