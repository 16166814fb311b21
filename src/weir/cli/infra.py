"""`weir infra up | down | status`: the local Kafka broker and AWS endpoint, and Trino on
request (docs/infra.md)."""

from __future__ import annotations

import typer
from rich.table import Table

from weir.cli.app import conf_option, console, group, load
from weir.config import ConfigError
from weir.errors import WeirError

infra_app = group("infra", "Local Kafka broker and AWS endpoint (and Trino on request).")

_STATE_STYLE = {"healthy": "green", "stopped": "dim", "unhealthy": "yellow", "port taken": "red"}


_OPTIONAL = ("trino",)
WITH_OPTION = typer.Option(
    [], "--with", help="also start an optional component: trino (Athena's engine, on Glue)"
)


@infra_app.command("up")
def up(
    conf: str = conf_option(),
    with_: list[str] = WITH_OPTION,
) -> None:
    """Start the local Kafka broker and AWS endpoint (idempotent), create topic and stream."""
    unknown = sorted(set(with_) - set(_OPTIONAL))
    if unknown:
        raise ConfigError("--with", f"unknown component {unknown[0]!r}; choose from trino")
    config = load(conf)
    from weir import infra

    with console.status("starting the local stack…"):
        reports = infra.up(config, with_trino="trino" in with_)
    for report in reports:
        how = f"started in {report.seconds:.1f}s" if report.started else "already running"
        console.print(
            f"[green]✓[/] {report.name:<6} {report.endpoint}  pid {report.pid}  {how}",
            highlight=False,
        )
        for resource in report.resources:
            console.print(f"         {resource}", highlight=False)
    console.print(f"state and logs under {config.infra.state_dir}", highlight=False)


@infra_app.command("down")
def down(conf: str = conf_option()) -> None:
    """Stop what `weir infra up` started (by PID file; data stays in the state folder)."""
    config = load(conf)
    from weir import infra

    with console.status("stopping the local stack…"):
        stopped = infra.down(config)
    for name, pid in stopped:
        what = f"stopped (pid {pid})" if pid is not None else "was not running"
        console.print(f"{name:<6} {what}", highlight=False)


@infra_app.command("status")
def status(conf: str = conf_option()) -> None:
    """Show each local component, its port and health (exit code 1 unless all healthy)."""
    config = load(conf)
    from weir import infra

    table = Table(title=f"weir infra ({config.infra.state_dir})")
    table.add_column("component", no_wrap=True)
    table.add_column("endpoint", no_wrap=True)
    table.add_column("pid", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("detail")
    rows = infra.status(config)
    for row in rows:
        style = _STATE_STYLE.get(row.state, "")
        table.add_row(
            row.name,
            row.endpoint,
            str(row.pid) if row.pid is not None else "-",
            f"[{style}]{row.state}[/]" if style else row.state,
            row.detail,
        )
    console.print(table)
    not_healthy = [row.name for row in rows if not row.healthy]
    if not_healthy:
        raise WeirError(f"not healthy: {', '.join(not_healthy)} (start with `weir infra up`)")
