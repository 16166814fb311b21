"""`weir simulate`: a device fleet into Kafka, Kinesis or the landing folder."""

from __future__ import annotations

from weir.cli.app import app, conf_option, load, not_built


@app.command()
def simulate(conf: str = conf_option()) -> None:
    """Simulate a device fleet into Kafka, Kinesis or the landing folder."""
    load(conf)
    not_built("simulate", 3)
