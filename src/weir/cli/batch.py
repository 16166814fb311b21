"""`weir batch rebuild`: the batch layer."""

from __future__ import annotations

from typing import Optional

import typer

from weir.cli.app import conf_option, group, load, not_built

batch_app = group("batch", "Batch layer: rebuild authoritative views from the raw zone.")


@batch_app.command("rebuild")
def rebuild(
    conf: str = conf_option(),
    cutoff: Optional[str] = typer.Option(None, help="ISO-8601; default now floored to the hour"),
) -> None:
    """Rebuild the batch view from the raw zone."""
    load(conf)
    not_built("batch rebuild", 5)
