"""What every ``_control`` run table shares: statuses, run ids, timestamps, one reader.

A run table holds one row per run of a job (a batch rebuild, a merge), appended once when the
run ends, succeeded or failed: a blind append, which never conflicts with another writer. A
row is a frozen dataclass whose fields are the table's schema, column for column.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import ClassVar, Optional, TypeVar

from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType, TimestampType

from weir.delta import read_table
from weir.errors import describe_error

log = logging.getLogger(__name__)

UTC = timezone.utc
RUN_SUCCEEDED = "succeeded"
RUN_FAILED = "failed"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

R = TypeVar("R", bound="RunRecord")


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """``2026-03-01T10:00:00Z``: an instant as the logs and messages show it."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def utc_from_micros(micros: Optional[int]) -> Optional[datetime]:
    return None if micros is None else _EPOCH + timedelta(microseconds=micros)


def new_run_id(kind: str, started: datetime) -> str:
    """``<kind>-20260301T100000Z-1a2b3c4d``: sortable by start, unique across machines."""
    return f"{kind}-{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def portable_columns(schema: StructType, present: Iterable[str]) -> list[Column]:
    """``schema``'s columns of a run table, readable the same way in any Python process.

    Timestamps travel as epoch microseconds: PySpark turns TimestampType into naive datetimes
    in the Python process's local zone, which need not be UTC. A column a table written by an
    older Weir lacks reads as null. Pair with :func:`utc_values`.
    """
    present = set(present)
    columns = []
    for field in schema.fields:
        if field.name not in present:
            columns.append(F.lit(None).alias(field.name))
        elif isinstance(field.dataType, TimestampType):
            columns.append(F.unix_micros(F.col(field.name)).alias(field.name))
        else:
            columns.append(F.col(field.name))
    return columns


def utc_values(schema: StructType, values: dict) -> dict:
    """A row read through :func:`portable_columns`, its timestamps as aware UTC datetimes."""
    for field in schema.fields:
        if isinstance(field.dataType, TimestampType):
            values[field.name] = utc_from_micros(values[field.name])
    return values


class RunRecord:
    """A row of a run table: subclasses are frozen dataclasses whose fields are ``SCHEMA``'s
    columns in order (tested field for field)."""

    SCHEMA: ClassVar[StructType]

    def as_row(self) -> tuple:
        """The values in ``SCHEMA`` order, for ``spark.createDataFrame``."""
        return tuple(getattr(self, name) for name in self.SCHEMA.fieldNames())

    @classmethod
    def from_values(cls: type[R], values: dict) -> R:
        return cls(**utc_values(cls.SCHEMA, values))


def append_run(spark: SparkSession, path: str, run: RunRecord) -> None:
    """Append one run record: one atomic Delta commit; creates the table on first use.

    ``mergeSchema`` lets a table written by an older Weir gain the columns added since.
    """
    spark.createDataFrame([run.as_row()], run.SCHEMA).write.format("delta").mode("append").option(
        "mergeSchema", "true"
    ).save(path)


def append_failed_run(
    spark: SparkSession,
    path: str,
    run: RunRecord,
    error: BaseException,
    at: datetime,
    **fields: object,
) -> None:
    """Record ``run`` as failed at ``at`` with the first line of ``error`` (and ``fields``).

    Best effort: if even that append fails, it is logged and swallowed, because the original
    error is the one the caller reports.
    """
    failed = dataclasses.replace(
        run, status=RUN_FAILED, finished_at=at, error=describe_error(error), **fields
    )
    try:
        append_run(spark, path, failed)
    except Exception:
        log.exception("%s: could not record the failure", getattr(run, "run_id", run))


def read_runs(spark: SparkSession, path: str, record: type[R]) -> list[R]:
    """Every run recorded at ``path``, oldest first ([] when there is no table)."""
    runs = read_table(spark, path)
    if runs is None:
        return []
    ordered = runs.orderBy("started_at", "run_id").select(
        *portable_columns(record.SCHEMA, runs.columns)
    )
    return [record.from_values(row.asDict()) for row in ordered.collect()]


def latest_run(
    spark: SparkSession, path: str, record: type[R], condition: Optional[Column] = None
) -> Optional[R]:
    """The run at ``path`` that finished last among those matching ``condition``; None if none.

    Ties on ``finished_at`` go to the later start.
    """
    runs = read_table(spark, path)
    if runs is None:
        return None
    matching = runs if condition is None else runs.where(condition)
    latest = matching.orderBy(F.col("finished_at").desc(), F.col("started_at").desc())
    row = latest.select(*portable_columns(record.SCHEMA, runs.columns)).first()
    return None if row is None else record.from_values(row.asDict())
