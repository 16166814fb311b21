"""`weir query [--engine spark|trino] [--format table|csv|json] SQL` (docs/serving.md, "Trino")."""

from __future__ import annotations

import typer
from rich.table import Table

from weir.cli.app import app, conf_option, console, load
from weir.config import ConfigError


@app.command()
def query(
    sql: str = typer.Argument(
        ..., help="one SQL statement, e.g. 'SELECT count(*) FROM weir.telemetry_minute'"
    ),
    engine: str = typer.Option(
        "spark", "--engine", help="spark (Spark SQL) | trino (Athena's engine, via Glue)"
    ),
    fmt: str = typer.Option("table", "--format", help="table | csv | json"),
    conf: str = conf_option(),
) -> None:
    """Run ad-hoc SQL on Spark SQL or Trino and print the rows."""
    from weir.query import ENGINES, FORMATS, render, run_spark, run_trino, table_cells

    if engine not in ENGINES:
        raise ConfigError(
            "--engine", f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}"
        )
    if fmt not in FORMATS:
        raise ConfigError("--format", f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    config = load(conf)
    if engine == "trino":
        result = run_trino(config, sql)
    else:
        from weir.spark import build_session

        result = run_spark(build_session(config, app_name="weir-query"), sql)
    if fmt != "table":
        # Plain print: meant to be piped, without rich's markup or wrapping.
        print(render(result, fmt), end="")
        return
    table = Table(*result.columns, title=f"{len(result.rows)} rows ({engine})")
    for cells in table_cells(result):
        table.add_row(*cells)
    console.print(table, markup=False, highlight=False)
