"""The `weir` command line (DESIGN.md §8). Thin: parse arguments, load config, call src/weir.

Exit codes: 0 success; 1 a failure at run time, with the reason; 2 bad arguments or
configuration, found before anything was written.
"""

from __future__ import annotations

import sys
from typing import Optional

import click
import typer
from rich.console import Console
from rich.table import Table

from weir.config import DEFAULT_CONF_PATH, ConfigError, WeirConfig, load_config
from weir.errors import EXIT_BAD_CONFIG, EXIT_OK, EXIT_RUNTIME_FAILURE, WeirError

app = typer.Typer(
    name="weir",
    help="Weir: Lambda-architecture IoT telemetry on Spark and Delta Lake.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
infra_app = typer.Typer(help="Local Kafka broker and AWS endpoint.", no_args_is_help=True)
batch_app = typer.Typer(help="Batch layer: rebuild authoritative views.", no_args_is_help=True)
dq_app = typer.Typer(help="Data-quality checks.", no_args_is_help=True)
catalog_app = typer.Typer(help="Glue / Spark catalog.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
emr_app = typer.Typer(help="Amazon EMR deployment.", no_args_is_help=True)
for sub, name in (
    (infra_app, "infra"),
    (batch_app, "batch"),
    (dq_app, "dq"),
    (catalog_app, "catalog"),
    (config_app, "config"),
    (emr_app, "emr"),
):
    app.add_typer(sub, name=name)

console = Console()
errors = Console(stderr=True)

ConfOption = typer.Option(DEFAULT_CONF_PATH, "--conf", help="configuration file (YAML)")


def _config(path: str) -> WeirConfig:
    return load_config(path)


def _not_built(command: str, issue: int) -> None:
    raise WeirError(f"`weir {command}` is not built yet (tracked in issue #{issue})")


@config_app.command("check")
def config_check(conf: str = ConfOption) -> None:
    """Validate a configuration file (and WEIR__* overrides); print the resolved values."""
    config = _config(conf)
    table = Table("key", "value", title=f"{conf}: valid", show_lines=False)
    for section, values in config.model_dump().items():
        for key, value in values.items() if isinstance(values, dict) else [("", values)]:
            if "secret" in key:
                value = "***" if value else value
            table.add_row(f"{section}.{key}".rstrip("."), str(value))
    console.print(table)


@app.command()
def demo(
    conf: str = ConfOption,
    events: int = typer.Option(2000, min=1, max=5_000_000, help="valid events in the sample"),
    seed: int = typer.Option(7, help="random seed of the sample"),
) -> None:
    """The whole flow locally, end to end, with a summary at the end."""
    config = _config(conf)
    from weir.demo import run_demo
    from weir.spark import build_session

    spark = build_session(config, app_name="weir-demo")
    summary = run_demo(spark, config, count=events, seed=seed)
    table = Table("zone", "rows", title="weir demo: contract path (sample -> raw -> views)")
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


@infra_app.command("up")
def infra_up(conf: str = ConfOption) -> None:
    """Start the local Kafka broker and AWS endpoint."""
    _config(conf)
    _not_built("infra up", 3)


@infra_app.command("down")
def infra_down(conf: str = ConfOption) -> None:
    """Stop what `weir infra up` started."""
    _config(conf)
    _not_built("infra down", 3)


@infra_app.command("status")
def infra_status(conf: str = ConfOption) -> None:
    """Show each local component, its port and health."""
    _config(conf)
    _not_built("infra status", 3)


@app.command()
def simulate(conf: str = ConfOption) -> None:
    """Simulate a device fleet into Kafka, Kinesis or the landing folder."""
    _config(conf)
    _not_built("simulate", 3)


@app.command()
def stream(
    conf: str = ConfOption,
    source: str = typer.Option("kafka", help="kafka | kinesis | files"),
    available_now: bool = typer.Option(False, "--available-now", help="drain and stop"),
) -> None:
    """Run the raw archiver and the speed layer."""
    _config(conf)
    _not_built("stream", 4)


@batch_app.command("rebuild")
def batch_rebuild(
    conf: str = ConfOption,
    cutoff: Optional[str] = typer.Option(
        None, help="ISO-8601 cutoff; default now floored to the hour"
    ),
) -> None:
    """Rebuild the batch view from the raw zone."""
    _config(conf)
    _not_built("batch rebuild", 5)


@app.command()
def merge(conf: str = ConfOption) -> None:
    """Publish the unified telemetry_minute table."""
    _config(conf)
    _not_built("merge", 6)


@dq_app.command("run")
def dq_run(conf: str = ConfOption) -> None:
    """Run the data-quality checks."""
    _config(conf)
    _not_built("dq run", 6)


@catalog_app.command("sync")
def catalog_sync(conf: str = ConfOption) -> None:
    """Create or update the catalog tables."""
    _config(conf)
    _not_built("catalog sync", 6)


@catalog_app.command("ddl")
def catalog_ddl(conf: str = ConfOption) -> None:
    """Print the Athena DDL of Weir's tables."""
    _config(conf)
    _not_built("catalog ddl", 6)


@app.command()
def maintain(conf: str = ConfOption) -> None:
    """OPTIMIZE and VACUUM every Weir table."""
    _config(conf)
    _not_built("maintain", 6)


@app.command()
def bench(conf: str = ConfOption) -> None:
    """Run the benchmarks and compare with the baseline."""
    _config(conf)
    _not_built("bench", 4)


@app.command()
def package(conf: str = ConfOption) -> None:
    """Build the job bundle for EMR."""
    _config(conf)
    _not_built("package", 6)


@emr_app.command("submit")
def emr_submit(conf: str = ConfOption) -> None:
    """Submit a job to EMR / EMR Serverless."""
    _config(conf)
    _not_built("emr submit", 6)


def main(argv: Optional[list] = None) -> int:
    """Console entry point: maps errors to DESIGN.md §8 exit codes."""
    try:
        app(args=argv, standalone_mode=False)
    except ConfigError as error:
        errors.print(f"[bold red]configuration error[/] {error}", highlight=False)
        return EXIT_BAD_CONFIG
    except WeirError as error:
        errors.print(f"[bold red]failed[/] {error}", highlight=False)
        return EXIT_RUNTIME_FAILURE
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.exceptions.Abort:
        errors.print("aborted")
        return EXIT_RUNTIME_FAILURE
    except click.ClickException as error:
        error.show()
        return EXIT_BAD_CONFIG
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
