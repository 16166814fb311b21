"""`weir chaos`: the platform under seeded kills and broker outages, reconciled at the end."""

from __future__ import annotations

import typer

from weir.cli.app import app, conf_option, console, load, verbose
from weir.errors import WeirError


@app.command()
def chaos(
    conf: str = conf_option(),
    minutes: float = typer.Option(3.0, min=1.0, help="how long the faults go on"),
    seed: int = typer.Option(1, help="the same seed, the same fault plan"),
    rate: float = typer.Option(50.0, min=1.0, help="simulated records per second"),
    source: str = typer.Option(
        "kafka",
        help="kafka (outages stop the broker) | kinesis (outages cut the link to the AWS endpoint)",
    ),
    folder: str = typer.Option(
        "", help="where the run's lake, broker and logs go (default <infra.state_dir>/chaos)"
    ),
) -> None:
    """Stream, merge loop, batch runs and maintain under seeded kill -9s and outages of the
    broker (or of the link to the AWS endpoint, with --source kinesis), then reconcile with the
    simulator's ledger. Exit 0 only if nothing was lost or duplicated and the unified table
    equals a clean rebuild."""
    from pathlib import Path

    from weir.chaos import ChaosOptions, run_chaos

    config = load(conf)
    verbose()
    where = Path(folder) if folder else Path(config.infra.state_dir).resolve() / "chaos"
    say = lambda line: console.print(line, highlight=False, markup=False)  # noqa: E731
    options = ChaosOptions(minutes=minutes, seed=seed, rate=rate, source=source)
    report = run_chaos(config, options, where, say)
    for line in report.lines():
        say(line)
    if not report.ok:
        raise WeirError(f"chaos run (seed {seed}): {len(report.problems)} problem(s), see above")
