"""`weir config check`."""

from __future__ import annotations

from rich.table import Table

from weir.cli.app import conf_option, console, group, load

config_app = group("config", "Configuration.")


@config_app.command("check")
def check(conf: str = conf_option()) -> None:
    """Validate a configuration file (and WEIR__* overrides); print the resolved values."""
    config = load(conf)
    table = Table("key", "value", title=f"{conf}: valid")
    for key, value in _flatten(config.model_dump()):
        table.add_row(key, "***" if value and _is_secret(key) else str(value))
    console.print(table)


_SECRET_WORDS = ("secret", "password", "token", "sasl.jaas.config")


def _is_secret(key: str) -> bool:
    return any(word in key.lower() for word in _SECRET_WORDS)


def _flatten(values: dict, prefix: str = "") -> list:
    """(dotted key, value) pairs of a nested mapping, leaves only."""
    pairs = []
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            pairs.extend(_flatten(value, f"{dotted}."))
        else:
            pairs.append((dotted, value))
    return pairs
