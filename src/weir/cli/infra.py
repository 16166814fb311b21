"""`weir infra up | down | status`: the local Kafka broker and AWS endpoint."""

from __future__ import annotations

from weir.cli.app import conf_option, group, load, not_built

infra_app = group("infra", "Local Kafka broker and AWS endpoint.")


@infra_app.command("up")
def up(conf: str = conf_option()) -> None:
    """Start the local Kafka broker and AWS endpoint."""
    load(conf)
    not_built("infra up", 3)


@infra_app.command("down")
def down(conf: str = conf_option()) -> None:
    """Stop what `weir infra up` started."""
    load(conf)
    not_built("infra down", 3)


@infra_app.command("status")
def status(conf: str = conf_option()) -> None:
    """Show each local component, its port and health."""
    load(conf)
    not_built("infra status", 3)
