"""`weir demo`: the whole flow locally, end to end, with a summary at the end."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from weir.cli.app import app, conf_option, console, load


@app.command()
def demo(
    conf: str = conf_option(),
    devices: int = typer.Option(50, min=1, max=10_000, help="simulated devices"),
    minutes: int = typer.Option(
        40, min=1, max=24 * 60, help="minutes of event-time history, ending now"
    ),
    interval: float = typer.Option(2.0, min=0.1, help="seconds between two readings of a device"),
    seed: int = typer.Option(7, help="simulator seed (same seed, same events)"),
    keep: bool = typer.Option(
        False, "--keep", help="leave the local infra running and the demo topic in place"
    ),
    json_out: Optional[str] = typer.Option(
        None, "--json", help="also write the summary as JSON to this file"
    ),
) -> None:
    """The whole flow locally: infra, simulate, stream, batch, merge, catalog, summary."""
    config = load(conf)
    from weir.demo import DemoOptions, run_demo
    from weir.spark import build_session

    logging.getLogger("weir.demo").setLevel(logging.INFO)
    options = DemoOptions(
        devices=devices, minutes=minutes, interval_s=interval, seed=seed, keep=keep
    )
    spark = build_session(config, app_name="weir-demo")
    report = run_demo(spark, config, options)
    if json_out:
        Path(json_out).write_text(json.dumps(dataclasses.asdict(report), default=str, indent=2))
    _print(report)


def _print(report) -> None:
    steps = Table("step", "seconds", "what happened", title="weir demo")
    for step in report.steps:
        steps.add_row(step.name, f"{step.seconds:.1f}", step.detail)
    console.print(steps)

    zones = Table("table", "rows", title="rows per zone")
    for name, rows in report.zones.items():
        zones.add_row(name, f"{rows:,}")
    console.print(zones)

    reasons = Table("quarantine reason", "rows")
    for reason, rows in report.quarantine_by_reason.items():
        reasons.add_row(reason, f"{rows:,}")
    console.print(reasons)

    layers = Table("layer", "windows", "events", title=f"telemetry_minute (H = {report.horizon})")
    for layer, figures in sorted(report.unified_by_layer.items()):
        layers.add_row(layer, f"{figures['windows']:,}", f"{figures['events']:,}")
    console.print(layers)

    console.print(f"[bold]{report.sample_query}[/]", highlight=False)
    if report.sample_rows:
        result = Table(*report.sample_rows[0].keys())
        for row in report.sample_rows:
            result.add_row(*(str(value) for value in row.values()))
        console.print(result)

    agreement = "n/a" if report.dq_agreement is None else f"{report.dq_agreement:.1%}"
    counts = ", ".join(f"{n} {what}" for what, n in report.dq_counts.items())
    console.print(f"data quality: {counts}; batch-vs-speed agreement {agreement}", highlight=False)
    for failure in report.dq_failed:
        console.print(f"  [red]failed[/] {failure}", highlight=False)
    console.print(f"Data Docs: {report.dq_docs}", highlight=False)

    for check, ok in report.checks.items():
        console.print(f"{'[green]✓[/]' if ok else '[red]✗[/]'} {check}")
    console.print(
        f"produced -> visible in telemetry_minute: {report.freshness_seconds:.0f}s "
        f"(stream, batch and merge run one after another here; see docs/serving.md)",
        highlight=False,
    )
    console.print(f"catalog: {', '.join(report.catalog_tables)}", highlight=False)
    console.print(f"ledger: {report.ledger_dir}", highlight=False)
    if report.infra_stopped:
        console.print(f"stopped what the demo started: {', '.join(report.infra_stopped)}")
    console.print(f"weir demo done in {report.seconds:.0f}s")
