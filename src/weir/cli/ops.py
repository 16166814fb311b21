"""Operations: `weir catalog`, `maintain` and `bench` (`dq`: cli/quality.py; `package`, `emr`:
cli/emr.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from weir.cli.app import app, conf_option, console, group, load, verbose
from weir.config import ConfigError
from weir.errors import WeirError

catalog_app = group("catalog", "Glue / Spark catalog.")


@catalog_app.command("sync")
def catalog_sync(conf: str = conf_option()) -> None:
    """Create or update the catalog tables (Spark metastore locally, Glue on AWS)."""
    from weir.catalog import sync_catalog
    from weir.spark import build_session

    config = load(conf)
    verbose()
    registered = sync_catalog(build_session(config, app_name="weir-catalog"), config)
    kind = config.catalog.kind
    console.print(f"weir catalog sync ({kind}): {len(registered)} tables registered")
    for name in registered:
        console.print(f"  {name}")


@catalog_app.command("ddl")
def catalog_ddl(conf: str = conf_option()) -> None:
    """Print the Athena DDL of Weir's tables (no Spark session needed)."""
    from weir.catalog import athena_ddl, catalog_tables
    from weir.lake import LakeLayout

    config = load(conf)
    tables = catalog_tables(LakeLayout.from_config(config))
    # Plain print: the DDL is meant to be piped or pasted, without rich's markup or wrapping.
    print(athena_ddl(config.catalog.database, tables), end="")


@app.command()
def maintain(
    conf: str = conf_option(),
    retention_hours: float = typer.Option(
        168, "--retention-hours", help="VACUUM keeps files younger than this (minimum 168)"
    ),
    allow_short_retention: bool = typer.Option(
        False,
        "--allow-short-retention",
        help="allow --retention-hours below 168 (Delta's own retention check still applies)",
    ),
) -> None:
    """OPTIMIZE (Z-order by device_id for the minute views) and VACUUM every Weir table."""
    from weir.maintain import check_retention, run_maintenance
    from weir.spark import build_session

    config = load(conf)
    check_retention(retention_hours, allow_short_retention)  # before a session starts
    spark = build_session(config, app_name="weir-maintain")
    run_maintenance(
        spark,
        config,
        retention_hours,
        allow_short_retention,
        report=lambda line: console.print(line, highlight=False, markup=False),
    )


def _print_result(result: object, path: object) -> None:
    table = Table("measurement", "events", "seconds", "events/s", title=f"bench {result.suite}")
    for m in result.measurements:
        table.add_row(m.name, f"{m.events:,}", f"{m.seconds:.2f}", f"{m.events_per_second:,.0f}")
    console.print(table)
    for check in result.checks:
        mark = "[green]met[/]" if check["met"] else "[red]MISSED[/]"
        console.print(f"  {mark} {check['check']} (value {check['value']:,})")
    console.print(f"  figures: {path}")


@app.command()
def bench(
    suite: str = typer.Argument(
        "all",
        help="contract | batch | plain-batch | simulate | streaming | hudi | merge | unified | dq"
        " | chaos"
        " | all | report (render the newest figures into one report)",
    ),
    conf: str = conf_option(),
    events: Optional[int] = typer.Option(
        None, min=1000, help="events per measurement (default: the suite's own size)"
    ),
    repeat: int = typer.Option(2, min=1, max=10, help="best of N runs"),
    quick: bool = typer.Option(
        False, "--quick", help="every quick scenario at toy size, then the report (~2 min)"
    ),
    results: Optional[str] = typer.Option(
        None, help="figures folder (default bench/results; bench/results/quick with --quick)"
    ),
    docs: Optional[str] = typer.Option(
        None,
        help="the report page (default docs/performance.md; "
        "build/bench-quick/performance.md with --quick)",
    ),
) -> None:
    """Run benchmarks against their in-run baselines; figures go to bench/results/."""
    from weir.bench.harness import RESULTS_DIR
    from weir.bench.report import DOCS_PAGE, write_report
    from weir.bench.suites import SUITES, run_quick

    results_dir = Path(results) if results else (RESULTS_DIR / "quick" if quick else RESULTS_DIR)
    page = (
        Path(docs) if docs else (Path("build/bench-quick/performance.md") if quick else DOCS_PAGE)
    )
    if suite == "report" and not quick:
        path, page = write_report(results_dir, page)
        console.print(f"report: {path}\npage: {page}")
        return
    names = list(SUITES) if suite == "all" else [suite]
    unknown = [name for name in names if name not in SUITES]
    if unknown and not quick:
        raise ConfigError(
            "SUITE", f"unknown suite {unknown[0]!r}; choose from {', '.join(SUITES)}, report"
        )
    config = load(conf)
    from weir.spark import build_session

    spark = build_session(config, app_name="weir-bench")
    if quick:
        path, page = run_quick(spark, config, results_dir, page, report=_print_result)
        console.print(f"report: {path}\npage: {page}")
        return
    failed = []
    for name in names:
        result = SUITES[name](spark, config, events, repeat)
        path = result.write(results_dir)
        _print_result(result, path)
        if not result.passed:
            failed.append(name)
    if failed:
        raise WeirError(f"benchmark targets missed in: {', '.join(failed)}")
