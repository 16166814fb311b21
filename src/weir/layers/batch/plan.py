"""How a batch run decides what to rebuild: its baseline, the raw records new to it, its dates.

An incremental run builds on the latest successful complete run (its *baseline*): the raw
records ingested from ``changes_since`` on may be new to it, and only the event dates whose
winners those records can change are rebuilt (docs/batch.md, "Incremental runs").
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Optional

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.contract import classify_records, valid_events
from weir.control import MODE_FULL, MODE_INCREMENTAL, MODE_RANGE, BatchRun
from weir.control.runs import utc_from_micros
from weir.delta import read_snapshot, table_version
from weir.errors import WeirError
from weir.lake import LakeLayout
from weir.layers.batch.request import RebuildRequest
from weir.layers.batch.transforms import changed_event_dates

log = logging.getLogger("weir.layers.batch")

_COUNT_FIELDS = ("valid", "quarantined", "duplicates", "conflicting_duplicates")


@dataclass(frozen=True)
class Plan:
    """Which dates a run replaces: all (None), a list, and what it was based on."""

    mode: str
    dates: Optional[tuple[date, ...]]
    baseline_run_id: Optional[str] = None
    changes_since: Optional[datetime] = None


class RunProgress:
    """The run record as a run fills it in: a failure records what was known by then."""

    def __init__(self, run: BatchRun) -> None:
        self.run = run

    def update(self, **changes: Any) -> BatchRun:
        self.run = dataclasses.replace(self.run, **changes)
        return self.run


def latest_finished(runs: Sequence[BatchRun]) -> Optional[BatchRun]:
    """The run that finished last (the order of ``weir.control.latest_batch_run``)."""
    return max(runs, key=lambda run: (run.finished_at, run.started_at), default=None)


def raw_version(spark: SparkSession, lake: LakeLayout) -> int:
    """The RAW table's current Delta version; :class:`WeirError` when there is no raw table."""
    version = table_version(spark, lake.raw)
    if version is None:
        raise WeirError(
            f"no raw table at {lake.raw}: nothing to rebuild from; "
            "run `weir stream` first (or check lake.root)"
        )
    return version


def changes_since(
    spark: SparkSession, lake: LakeLayout, baseline: BatchRun, version: int
) -> Optional[datetime]:
    """The ingest time from which raw records may be new to this run; None if unknowable.

    Normally the baseline's cutoff. But a micro-batch stamps ``ingest_time`` when it starts
    and commits later (a replay after a crash: much later), so a file committed after the
    baseline's snapshot can hold records ingested before its cutoff: the earliest ingest
    time in those files moves the bound back. Reading only that column of only those files
    is cheap; deleted rows still read there only make the bound earlier (safe).
    """
    if baseline.raw_version is None or baseline.raw_version > version:
        return None  # the raw table was recreated: no common history to diff
    try:
        seen = set(read_snapshot(spark, lake.raw, baseline.raw_version).inputFiles())
    except AnalysisException:
        return None  # the baseline's version left the Delta log (log retention)
    added = [f for f in read_snapshot(spark, lake.raw, version).inputFiles() if f not in seen]
    if not added:
        return baseline.cutoff
    earliest = (
        spark.read.schema("ingest_time TIMESTAMP")
        .parquet(*added)
        .agg(F.unix_micros(F.min("ingest_time")))
        .first()[0]
    )
    if earliest is None:
        return baseline.cutoff
    return min(baseline.cutoff, utc_from_micros(earliest))


def plan_run(
    spark: SparkSession,
    lake: LakeLayout,
    request: RebuildRequest,
    baseline: Optional[BatchRun],
    version: int,
) -> Plan:
    """The mode a run takes and, except for incremental runs, its dates (before any dedup).

    An incremental run without a usable baseline (none yet, no view, or raw history that
    cannot be diffed) rebuilds every date and is recorded as ``full``.
    """
    if request.mode == MODE_FULL:
        return Plan(MODE_FULL, None)
    if request.mode == MODE_RANGE:
        assert request.date_from is not None and request.date_to is not None
        days = (request.date_to - request.date_from).days + 1
        dates = tuple(request.date_from + timedelta(days=n) for n in range(days))
        return Plan(MODE_RANGE, dates)
    if baseline is None:
        log.info("batch: no earlier complete run; rebuilding every date")
        return Plan(MODE_FULL, None)
    if table_version(spark, lake.batch) is None:
        log.info("batch: no batch view at %s; rebuilding every date", lake.batch)
        return Plan(MODE_FULL, None)
    since = changes_since(spark, lake, baseline, version)
    if since is None:
        log.info("batch: cannot diff raw against run %s; rebuilding every date", baseline.run_id)
        return Plan(MODE_FULL, None)
    return Plan(MODE_INCREMENTAL, (), baseline.run_id, since)


def changed_dates(raw: DataFrame, deduped: DataFrame, since: datetime) -> tuple[date, ...]:
    """The event dates :func:`~weir.layers.batch.transforms.changed_event_dates` finds, sorted."""
    new_events = raw.where(F.col("ingest_time") >= F.lit(since)).transform(classify_records)
    changed = changed_event_dates(new_events.transform(valid_events), deduped, since)
    return tuple(sorted(row["event_date"] for row in changed.collect()))


def unchanged_since(
    raw: DataFrame, since: datetime, records_in: int, baseline: BatchRun
) -> Optional[dict]:
    """The baseline's counts when this run reads exactly the baseline's records, else None.

    No record with ``ingest_time >= since`` means every record read was read by the baseline
    (see :func:`changes_since`); with as many records, the two runs read the same set, so the
    view and the counts are the baseline's and the dedup can be skipped.
    """
    if records_in != baseline.records_in:
        return None
    if raw.where(F.col("ingest_time") >= F.lit(since)).limit(1).count():
        return None
    return {name: getattr(baseline, name) for name in _COUNT_FIELDS} | {"records_in": records_in}
