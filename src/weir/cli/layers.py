"""`weir stream` and `weir merge`: the speed layer and the serving layer."""

from __future__ import annotations

import typer

from weir.cli.app import app, conf_option, console, load


@app.command()
def stream(
    conf: str = conf_option(),
    source: str = typer.Option("kafka", help="kafka | kinesis | files"),
    available_now: bool = typer.Option(
        False, "--available-now", help="process what the source holds now, then stop"
    ),
    reset_checkpoint: bool = typer.Option(
        False,
        "--reset-checkpoint",
        help="after a checkpoint was deleted: start a new writer epoch (re-reads the source)",
    ),
) -> None:
    """Run the raw archiver and the speed layer (until SIGTERM / Ctrl-C, or --available-now)."""
    import threading

    from weir.layers.streaming import configure_logging, run_stream, stop_on_signals
    from weir.sources import check_source, require_built
    from weir.spark import build_session

    config = load(conf)
    check_source(config, source)
    require_built(source)
    configure_logging()
    spark = build_session(config, app_name=f"weir-stream-{source}")
    with stop_on_signals(threading.Event()) as stop:
        result = run_stream(spark, config, source, available_now, reset_checkpoint, stop)
    batches = ", ".join(f"{name} up to batch {batch}" for name, batch in result.last_batch.items())
    how = "stopped by signal" if result.stopped_by_signal else "done"
    console.print(f"weir stream --source {source}: {how} ({batches}) in {result.seconds:.1f}s")


@app.command()
def merge(conf: str = conf_option()) -> None:
    """Publish the unified telemetry_minute table (BATCH up to the horizon, SPEED beyond)."""
    import logging

    from rich.table import Table

    from weir.layers.serving import run_merge
    from weir.spark import build_session

    config = load(conf)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run = run_merge(build_session(config, app_name="weir-merge"), config)
    table = Table("", "", title=f"merge {run.run_id}: {run.status}", show_header=False)
    for name, value in (
        ("horizon H", "none: speed only" if run.horizon is None else run.horizon.isoformat()),
        ("batch run", run.batch_run_id),
        ("batch / speed version read", f"{run.batch_version} / {run.speed_version}"),
        ("scope", run.scope),
        ("partitions replaced", ", ".join(map(str, run.partitions_replaced or [])) or "none"),
        ("rows written / deleted", f"{run.rows_written} / {run.rows_deleted}"),
        ("serving version", run.serving_version),
        ("attempts", run.attempts),
    ):
        table.add_row(name, str(value))
    console.print(table)
