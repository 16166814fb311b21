"""`weir dq run`: the data-quality checks (weir.quality, docs/quality.md)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.markup import escape

from weir.cli.app import conf_option, console, group, load, verbose

dq_app = group("dq", "Data-quality checks.")
# A module-level option: a list default built in the signature would be shared between calls.
SUITE_OPTION = typer.Option(
    None,
    "--suite",
    help="run only this suite (repeatable): raw, quarantine, speed, batch, unified, "
    "batch_run, agreement",
)


def print_report(report: object) -> None:
    """The run in a few lines: counts, every failed check, the agreement and the Data Docs."""
    from weir.quality.run import CheckReport, describe

    assert isinstance(report, CheckReport)
    failed = report.critical_failures
    warnings = report.warnings
    passed = len(report.outcomes) - len(failed) - len(warnings)
    mark = "[green]passed[/]" if report.passed else "[red]FAILED[/]"
    console.print(
        f"weir dq run {escape(report.run_id)}: {mark} - {passed} passed, "
        f"{len(failed)} critical failed, {len(warnings)} warning(s) "
        f"({', '.join(report.suites)})",
        highlight=False,
    )
    for outcome in failed:
        console.print(f"  [red]critical[/] {escape(describe(outcome))}", highlight=False)
    for outcome in warnings:
        console.print(f"  [yellow]warning[/]  {escape(describe(outcome))}", highlight=False)
    for note in report.skipped:
        console.print(f"  skipped  {escape(note)}", highlight=False)
    if report.agreement is not None:
        console.print(f"  batch-vs-speed agreement: {report.agreement:.4f}", highlight=False)
    console.print(f"  data docs: {escape(report.docs_index)}", highlight=False)


@dq_app.command("run")
def dq_run(
    conf: str = conf_option(),
    suite: Optional[list[str]] = SUITE_OPTION,
    every: Optional[str] = typer.Option(
        None, "--every", metavar="DURATION", help="run every DURATION (90s, 5m) until stopped"
    ),
) -> None:
    """Run the data-quality checks; exit 3 when a critical check failed."""
    from weir.entry import interval_seconds
    from weir.quality.run import chosen_suites, run_dq
    from weir.spark import build_session

    config = load(conf)
    chosen = chosen_suites(suite)  # bad names and intervals exit 2 before Spark starts
    interval = None if every is None else interval_seconds(every, "--every")
    verbose()
    spark = build_session(config, app_name="weir-dq")
    run_dq(spark, config, chosen, interval, on_report=print_report)
