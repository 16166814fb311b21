"""The batch layer's two tables, written atomically: the minute view and the event index.

Each write is ONE Delta commit tagged with the run id (``userMetadata``): the whole table, or
exactly some ``event_date`` partitions (``replaceWhere``; Delta rejects a row outside them).
Idempotent. :func:`run_commit` finds the commit again for the run record.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Optional

from pyspark.sql import DataFrame, SparkSession

from weir.delta import dates_predicate, replace_partitions, tagged_commit
from weir.schemas import (
    BATCH_EVENTS_PARTITION_COLUMNS,
    BATCH_EVENTS_TABLE_PROPERTIES,
    MINUTE_PARTITION_COLUMNS,
)


def _where(dates: Optional[Sequence[date]]) -> Optional[str]:
    return None if dates is None else dates_predicate("event_date", dates)


def replace_minutes(
    minutes: DataFrame, path: str, run_id: str, dates: Optional[Sequence[date]]
) -> None:
    """Write the batch view atomically: ``dates`` None overwrites all of it, otherwise exactly
    those event_date partitions are replaced. One commit tagged ``run_id``; idempotent."""
    replace_partitions(minutes, path, MINUTE_PARTITION_COLUMNS, _where(dates), run_id)


def replace_event_index(
    rows: DataFrame, path: str, run_id: str, dates: Optional[Sequence[date]]
) -> None:
    """Write the event index like the view: all of it, or exactly ``dates``, in one commit."""
    replace_partitions(
        rows,
        path,
        BATCH_EVENTS_PARTITION_COLUMNS,
        _where(dates),
        run_id,
        BATCH_EVENTS_TABLE_PROPERTIES,
    )


def run_commit(spark: SparkSession, path: str, run_id: str) -> tuple[Optional[int], int]:
    """(version, rows written) of the commit tagged ``run_id`` in the view or the event index;
    (None, 0) when the run made none (Delta skips a replace that neither adds nor removes a
    file)."""
    commit = tagged_commit(spark, path, run_id)
    if commit is None:
        return None, 0
    return commit.version, commit.metric("numOutputRows")
