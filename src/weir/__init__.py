"""Weir: a Lambda-architecture IoT telemetry platform on Apache Spark and Delta Lake."""

__version__ = "0.1.0"
