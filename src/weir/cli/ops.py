"""Operations: `weir dq`, `catalog`, `maintain`, `bench`, `package` and `emr`."""

from __future__ import annotations

import typer
from rich.table import Table

from weir.cli.app import app, conf_option, console, group, load, not_built
from weir.config import ConfigError
from weir.errors import WeirError

dq_app = group("dq", "Data-quality checks.")
catalog_app = group("catalog", "Glue / Spark catalog.")
emr_app = group("emr", "Amazon EMR deployment.")


@dq_app.command("run")
def dq_run(conf: str = conf_option()) -> None:
    """Run the data-quality checks."""
    load(conf)
    not_built("dq run", 6)


@catalog_app.command("sync")
def catalog_sync(conf: str = conf_option()) -> None:
    """Create or update the catalog tables."""
    load(conf)
    not_built("catalog sync", 6)


@catalog_app.command("ddl")
def catalog_ddl(conf: str = conf_option()) -> None:
    """Print the Athena DDL of Weir's tables."""
    load(conf)
    not_built("catalog ddl", 6)


@app.command()
def maintain(conf: str = conf_option()) -> None:
    """OPTIMIZE and VACUUM every Weir table."""
    load(conf)
    not_built("maintain", 6)


@app.command()
def bench(
    suite: str = typer.Argument("all", help="contract | all"),
    conf: str = conf_option(),
    events: int = typer.Option(2_000_000, min=1000, help="events per measurement"),
    repeat: int = typer.Option(2, min=1, max=10, help="best of N runs"),
) -> None:
    """Run benchmarks against their in-run baselines; figures go to bench/results/."""
    from weir.bench.suites import SUITES

    names = list(SUITES) if suite == "all" else [suite]
    unknown = [name for name in names if name not in SUITES]
    if unknown:
        raise ConfigError("SUITE", f"unknown suite {unknown[0]!r}; choose from {', '.join(SUITES)}")
    config = load(conf)
    from weir.spark import build_session

    spark = build_session(config, app_name="weir-bench")
    failed = []
    for name in names:
        result = SUITES[name](spark, events=events, repeat=repeat)
        path = result.write()
        table = Table("measurement", "events", "seconds", "events/s", title=f"bench {name}")
        for m in result.measurements:
            table.add_row(
                m.name, f"{m.events:,}", f"{m.seconds:.2f}", f"{m.events_per_second:,.0f}"
            )
        console.print(table)
        for check in result.checks:
            mark = "[green]met[/]" if check["met"] else "[red]MISSED[/]"
            console.print(f"  {mark} {check['check']} (value {check['value']:,})")
        console.print(f"  figures: {path}")
        if not result.passed:
            failed.append(name)
    if failed:
        raise WeirError(f"benchmark targets missed in: {', '.join(failed)}")


@app.command()
def package(conf: str = conf_option()) -> None:
    """Build the job bundle for EMR."""
    load(conf)
    not_built("package", 6)


@emr_app.command("submit")
def emr_submit(conf: str = conf_option()) -> None:
    """Submit a job to EMR / EMR Serverless."""
    load(conf)
    not_built("emr submit", 6)
