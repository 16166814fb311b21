"""The root `weir` Typer app and what every command shares (the --conf option, consoles)."""

from __future__ import annotations

import logging

import typer
from rich.console import Console

from weir.config import DEFAULT_CONF_PATH, WeirConfig, load_config
from weir.entry import configure_logging
from weir.errors import WeirError

app = typer.Typer(
    name="weir",
    help="Weir: Lambda-architecture IoT telemetry on Spark and Delta Lake.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console()
errors = Console(stderr=True)

CONF_HELP = "configuration file (YAML)"


def conf_option() -> str:
    """The `--conf FILE` option every command takes (default conf/local.yaml)."""
    return typer.Option(DEFAULT_CONF_PATH, "--conf", help=CONF_HELP)


def load(conf: str) -> WeirConfig:
    """Load and validate the config before anything else runs (ConfigError -> exit 2)."""
    return load_config(conf)


def verbose() -> None:
    """Log the command's steps (INFO): one line per micro-batch, batch step or merge."""
    configure_logging(logging.INFO)


def not_built(command: str, issue: int) -> None:
    raise WeirError(f"`weir {command}` is not built yet (tracked in issue #{issue})")


def group(name: str, help_text: str) -> typer.Typer:
    """A sub-command group (`weir infra …`) registered on the root app."""
    sub = typer.Typer(help=help_text, no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub
