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
    for section, values in config.model_dump().items():
        items = values.items() if isinstance(values, dict) else [("", values)]
        for key, value in items:
            shown = "***" if "secret" in key and value else value
            table.add_row(f"{section}.{key}".rstrip("."), str(shown))
    console.print(table)
