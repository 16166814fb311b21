"""The `weir` command line (docs/contract.md, "Command line and exit codes").

Thin: parse arguments, load config, call src/weir.

One module per command group under weir/cli/. It runs through :func:`weir.entry.run_job`,
like the spark-submit jobs, so exit codes mean the same everywhere: 0 success; 1 a failure at
run time, with the reason; 2 bad arguments or configuration, found before anything was
written; 3 data-quality checks ran and a critical one failed.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional

import typer
from rich.markup import escape

from weir.cli import (  # noqa: F401 (register)
    batch,
    chaos,
    config,
    demo,
    emr,
    infra,
    layers,
    ops,
    quality,
    query,
    simulate,
)
from weir.cli.app import app, errors
from weir.entry import run_job
from weir.errors import EXIT_BAD_CONFIG, EXIT_OK, EXIT_RUNTIME_FAILURE


def _print_failure(kind: str, reason: str) -> None:
    # One line whatever the terminal's width: a reason wrapped inside a path or a key
    # cannot be copied, nor grepped from a scheduler's log.
    errors.print(f"[bold red]{escape(kind)}[/] {escape(reason)}", highlight=False, soft_wrap=True)


def _invoke(argv: Optional[list]) -> int:
    try:
        # Without standalone mode click returns (not raises) the code of an Exit it caught,
        # e.g. 130 for an interrupt: dropping it would turn a second SIGTERM into success.
        returned = app(args=argv, standalone_mode=False)
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        errors.print("aborted")
        return EXIT_RUNTIME_FAILURE
    except typer.TyperException as error:
        # Usage errors (unknown option, bad value, unknown command): typer >= 0.29 vendors
        # click, so its exceptions derive from TyperException rather than click's.
        error.show()
        return EXIT_BAD_CONFIG
    return returned if isinstance(returned, int) else EXIT_OK


def main(argv: Optional[list] = None) -> int:
    """Console entry point: maps errors to exit codes (docs/contract.md). Commands that report their
    steps raise the log level to INFO (:func:`weir.cli.app.verbose`)."""
    return run_job(lambda: _invoke(argv), report=_print_failure, log_level=logging.WARNING)


def run() -> None:
    sys.exit(main())
