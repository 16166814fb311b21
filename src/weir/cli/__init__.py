"""The `weir` command line (DESIGN.md §8). Thin: parse arguments, load config, call src/weir.

One module per command group under weir/cli/. Exit codes: 0 success; 1 a failure at run
time, with the reason; 2 bad arguments or configuration, found before anything was written.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer
from rich.markup import escape

from weir.cli import batch, config, demo, infra, layers, ops, simulate  # noqa: F401 (register)
from weir.cli.app import app, errors
from weir.errors import EXIT_BAD_CONFIG, EXIT_OK, EXIT_RUNTIME_FAILURE, ConfigError, WeirError


def main(argv: Optional[list] = None) -> int:
    """Console entry point: maps errors to DESIGN.md §8 exit codes."""
    try:
        app(args=argv, standalone_mode=False)
    except ConfigError as error:
        errors.print(f"[bold red]configuration error[/] {escape(str(error))}", highlight=False)
        return EXIT_BAD_CONFIG
    except WeirError as error:
        errors.print(f"[bold red]failed[/] {escape(str(error))}", highlight=False)
        return EXIT_RUNTIME_FAILURE
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
    return EXIT_OK


def run() -> None:
    sys.exit(main())
