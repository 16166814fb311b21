"""`weir stream` and `weir merge`: the speed layer and the serving layer."""

from __future__ import annotations

import typer

from weir.cli.app import app, conf_option, load, not_built


@app.command()
def stream(
    conf: str = conf_option(),
    source: str = typer.Option("kafka", help="kafka | kinesis | files"),
    available_now: bool = typer.Option(False, "--available-now", help="drain and stop"),
) -> None:
    """Run the raw archiver and the speed layer."""
    load(conf)
    not_built("stream", 4)


@app.command()
def merge(conf: str = conf_option()) -> None:
    """Publish the unified telemetry_minute table."""
    load(conf)
    not_built("merge", 6)
