"""`weir demo`: the whole flow locally, end to end, with a summary at the end."""

from __future__ import annotations

import typer
from rich.table import Table

from weir.cli.app import app, conf_option, console, load


@app.command()
def demo(
    conf: str = conf_option(),
    events: int = typer.Option(2000, min=1, max=5_000_000, help="valid events in the sample"),
    seed: int = typer.Option(7, help="random seed of the sample"),
) -> None:
    """The whole flow locally, end to end, with a summary at the end."""
    config = load(conf)
    from weir.demo import run_demo
    from weir.spark import build_session

    spark = build_session(config, app_name="weir-demo")
    summary = run_demo(spark, config, count=events, seed=seed)
    table = Table("zone", "rows", title="weir demo: sample -> raw -> quarantine / batch view")
    table.add_row("raw (every record as received)", str(summary.raw))
    table.add_row("valid events (before dedup)", str(summary.valid))
    table.add_row("quarantine", str(summary.quarantined))
    table.add_row("distinct events (after dedup)", str(summary.distinct_events))
    table.add_row("conflicting duplicates", str(summary.conflicting_duplicates))
    table.add_row("batch telemetry_minute rows", str(summary.minute_rows))
    console.print(table)
    reasons = Table("quarantine reason", "rows")
    for reason, count in summary.quarantine_by_reason.items():
        reasons.add_row(reason, str(count))
    console.print(reasons)
    console.print(
        f"invariant raw = valid + quarantine: {summary.raw} = {summary.valid} + "
        f"{summary.quarantined} [bold green]holds[/]; took {summary.seconds:.1f}s"
    )
