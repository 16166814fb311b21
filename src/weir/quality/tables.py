"""The Weir tables a check run reads, each pinned at one Delta version.

Every check of a run reads the same snapshot of a table (``versionAsOf``), so a stream or a
batch run committing meanwhile changes nothing in the run, and the version validated is
recorded with every result row (``dq/results.table_version``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from weir.delta import read_snapshot, table_version


@dataclass(frozen=True)
class Snapshot:
    """A table as one check run reads it. ``version`` None: no table there (``frame`` is then
    an empty frame without columns, which fails the schema check and nothing else)."""

    name: str  # lake-relative, as dq/results names it: raw/telemetry, ...
    version: Optional[int]
    frame: DataFrame

    @property
    def exists(self) -> bool:
        return self.version is not None

    def has_columns(self, schema: StructType) -> bool:
        """Whether every column of ``schema`` is there: the metrics need them, and a table
        without them fails its schema check instead."""
        return self.exists and set(schema.fieldNames()) <= set(self.frame.columns)


def relative_name(root: str, path: str) -> str:
    """``path`` relative to the lake ``root`` (raw/telemetry), the name results carry."""
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


def pin(spark: SparkSession, root: str, path: str) -> Snapshot:
    """The Delta table at ``path`` at its latest version, read at exactly that version."""
    name = relative_name(root, path)
    version = table_version(spark, path)
    if version is None:
        return Snapshot(name, None, spark.createDataFrame([], StructType([])))
    return Snapshot(name, version, read_snapshot(spark, path, version))
