"""`weir stream` and `weir merge`: the speed layer and the serving layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from weir.cli.app import app, conf_option, console, load, verbose

if TYPE_CHECKING:
    from weir.control import MergeRun

stream_app = typer.Typer(
    help="The raw archiver and the speed layer of one source (docs/streaming.md).",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(stream_app, name="stream")


@stream_app.callback()
def stream(
    ctx: typer.Context,
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
    if ctx.invoked_subcommand is not None:
        return  # `weir stream status`: its own options
    from weir.entry import run_until_stopped
    from weir.layers.streaming import run_stream
    from weir.sources import check_source
    from weir.spark import build_session

    config = load(conf)
    check_source(config, source)
    verbose()
    spark = build_session(config, app_name=f"weir-stream-{source}")
    results = []
    run_until_stopped(
        lambda stop: results.append(
            run_stream(spark, config, source, available_now, reset_checkpoint, stop)
        ),
        "the current micro-batch",
    )
    result = results[0]
    batches = ", ".join(f"{name} up to batch {batch}" for name, batch in result.last_batch.items())
    how = "stopped by signal" if result.stopped_by_signal else "done"
    console.print(f"weir stream --source {source}: {how} ({batches}) in {result.seconds:.1f}s")


@stream_app.command("status")
def stream_status(conf: str = conf_option()) -> None:
    """The last recorded micro-batch of each streaming query: batch, rows, watermark, lag."""
    from weir.control import stream_status as last_progress
    from weir.lake import LakeLayout
    from weir.spark import build_session

    config = load(conf)
    lake = LakeLayout.from_config(config)
    rows = last_progress(build_session(config, app_name="weir-stream-status"), lake.stream_progress)
    if not rows:
        console.print(f"no stream has recorded progress in {lake.stream_progress} yet")
        return
    table = Table(
        "query",
        "batch",
        "at (UTC)",
        "rows",
        "took",
        "watermark (UTC)",
        "lag (offsets)",
        title=f"stream progress ({lake.stream_progress})",
    )
    for row in rows:
        watermark = row["watermark"]
        table.add_row(
            row["query_name"],
            str(row["batch_id"]),
            f"{row['trigger_time']:%Y-%m-%d %H:%M:%S}",
            str(row["num_input_rows"]),
            "" if row["batch_duration_ms"] is None else f"{row['batch_duration_ms'] / 1000:.1f}s",
            "" if watermark is None or watermark.year <= 1970 else f"{watermark:%Y-%m-%d %H:%M:%S}",
            "" if row["offsets_behind_latest"] is None else str(row["offsets_behind_latest"]),
        )
    console.print(table)


@app.command()
def merge(
    conf: str = conf_option(),
    follow: bool = typer.Option(
        False,
        "--follow",
        help="keep merging every timing.merge_interval_seconds until SIGTERM / Ctrl-C",
    ),
    every: Optional[str] = typer.Option(
        None,
        "--every",
        metavar="DURATION",
        help="keep merging every DURATION (120, 90s, 5m; start to start) until SIGTERM / Ctrl-C",
    ),
) -> None:
    """Publish the unified telemetry_minute table (BATCH up to the horizon, SPEED beyond)."""
    import time

    from weir.serving import merge_interval, run_merge, run_merges
    from weir.spark import build_session

    config = load(conf)
    interval = merge_interval(config, follow, every)  # exit 2 before Spark starts
    verbose()
    spark = build_session(config, app_name="weir-merge")
    if interval is not None:
        started = time.monotonic()
        merges = run_merges(spark, config, interval)
        console.print(
            f"weir merge: stopped after {merges} merge(s) every {interval}s "
            f"in {time.monotonic() - started:.1f}s"
        )
        return
    _print_merge(run_merge(spark, config))


def _print_merge(run: MergeRun) -> None:
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
