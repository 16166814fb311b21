"""`weir batch rebuild`: the batch layer (docs/batch.md)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from weir.cli.app import conf_option, console, group, load, verbose

batch_app = group("batch", "Batch layer: rebuild authoritative views from the raw zone.")


@batch_app.command("rebuild")
def rebuild(
    conf: str = conf_option(),
    cutoff: Optional[str] = typer.Option(
        None,
        "--cutoff",
        help="read raw records ingested before this ISO-8601 instant with Z or an offset; "
        "default now floored to the hour",
    ),
    date_from: Optional[str] = typer.Option(
        None, "--from", help="rebuild only event dates from this day (YYYY-MM-DD), with --to"
    ),
    date_to: Optional[str] = typer.Option(
        None, "--to", help="last event date to rebuild (YYYY-MM-DD), with --from"
    ),
    full: bool = typer.Option(
        False, "--full", help="overwrite the whole view instead of the changed dates"
    ),
    input_path: Optional[str] = typer.Option(
        None,
        "--input",
        help="first adopt the raw JSON-lines files under this folder or prefix (e.g. a "
        "Firehose delivery prefix) into the raw zone; files already adopted are skipped",
    ),
) -> None:
    """Rebuild the batch view from the raw zone (changed dates only, unless --full)."""
    config = load(conf)
    from weir.layers.batch import rebuild_request

    # exit 2 before Spark starts
    request = rebuild_request(cutoff, date_from, date_to, full, input_path=input_path)
    from weir.layers.batch import rebuild_batch
    from weir.spark import build_session

    verbose()
    spark = build_session(config, app_name="weir-batch-rebuild")
    run = rebuild_batch(spark, config, request)
    table = Table("", "", title=f"batch run {run.run_id}: {run.status}", show_header=False)
    dates = "all" if run.dates_rebuilt is None else str(len(run.dates_rebuilt))
    for name, value in (
        ("input adopted", request.input or "-"),
        ("mode", run.mode),
        ("cutoff", run.cutoff.isoformat()),
        ("horizon", run.horizon.isoformat()),
        ("raw version read", run.raw_version),
        ("records in", run.records_in),
        ("valid / quarantined", f"{run.valid} / {run.quarantined}"),
        ("duplicates / conflicting", f"{run.duplicates} / {run.conflicting_duplicates}"),
        ("dates rebuilt", dates),
        ("windows written", run.windows_written),
        ("view version", run.view_version),
    ):
        table.add_row(name, str(value))
    console.print(table)
