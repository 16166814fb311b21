"""Incremental runs from the event index (``batch/events``): read the new records, not all history.

The index holds one row per valid event_id over the raw history the last complete run read:
the winning copy, its copies and content fingerprints. An incremental run deduplicates its new
records among themselves, folds them into the index rows of the event_ids they touch
(``weir.contract.dedup.merge_first_received``) and gets the winners over all records, as a full
dedup would give them. It rewrites the index in the dates those rows leave or land on, then
the view in the dates whose winners changed (docs/batch.md, "The event index").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Optional

from delta.tables import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir import crashpoints
from weir.contract import classify_records, valid_events
from weir.contract.dedup import (
    CONTENT_FINGERPRINTS,
    first_received_with_contents,
    merge_first_received,
)
from weir.contract.parse import REASON_COLUMN
from weir.control import BatchRun
from weir.crashpoints import crash_point
from weir.delta import read_snapshot, table_version
from weir.lake import LakeLayout
from weir.layers.batch.plan import Plan, RunProgress
from weir.layers.batch.tables import replace_event_index, replace_minutes, run_commit
from weir.layers.batch.transforms import (
    event_date_of_event,
    event_index_rows,
    minute_rows,
    received_before,
    records_new_since,
)
from weir.schemas import BATCH_EVENTS_SCHEMA

log = logging.getLogger("weir.layers.batch")

# What identifies a winning copy: its place in the received order (the event's columns only
# break a tie between two streams' records with equal coordinates and ingest instant).
_RECEIVED_IDENTITY = ("ingest_time", "source", "source_partition", "source_offset")
# Delta operations that rewrite files without changing the rows (weir maintain).
_MAINTENANCE_OPERATIONS = ("OPTIMIZE", "VACUUM START", "VACUUM END")


def index_matches(spark: SparkSession, lake: LakeLayout, baseline: BatchRun) -> bool:
    """Whether batch/events holds exactly the winners over the baseline's records: the
    baseline recorded the index version it left, and every commit since only compacted."""
    if baseline.index_version is None or table_version(spark, lake.batch_events) is None:
        return False
    later = (
        DeltaTable.forPath(spark, lake.batch_events)
        .history()
        .where(F.col("version") > baseline.index_version)
        .select("operation")
        .collect()
    )
    return all(row["operation"] in _MAINTENANCE_OPERATIONS for row in later)


def incremental_from_index(
    spark: SparkSession,
    lake: LakeLayout,
    raw: DataFrame,
    records_in: int,
    baseline: BatchRun,
    plan: Plan,
    progress: RunProgress,
) -> Optional[BatchRun]:
    """An incremental run that reads the new records and the index, not all history.

    Returns None (the caller scans all history instead) when the counts do not add up, e.g.
    rows were deleted from RAW since the baseline.
    """
    assert plan.changes_since is not None and baseline.raw_version is not None
    baseline_raw = received_before(
        read_snapshot(spark, lake.raw, baseline.raw_version), baseline.cutoff
    )
    new = records_new_since(raw, baseline_raw, plan.changes_since, baseline.cutoff)
    classified = new.transform(classify_records).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counted = classified.agg(
            F.count(F.lit(1)).alias("records"),
            F.count(F.when(F.col(REASON_COLUMN).isNull(), True)).alias("valid"),
        ).first()
        if baseline.records_in is None or records_in != baseline.records_in + counted["records"]:
            log.info(
                "batch: %s records read, but the baseline's %s and %s new do not add up; "
                "scanning all history",
                records_in,
                baseline.records_in,
                counted["records"],
            )
            return None
        new_winners = (
            classified.transform(valid_events)
            .transform(first_received_with_contents)
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        try:
            fold = fold_into_index(
                spark, lake, new_winners, baseline, counted, records_in, progress
            )
        finally:
            new_winners.unpersist()
    finally:
        classified.unpersist()
    written_index = None
    if fold.index_dates:
        written_index = run_commit(spark, lake.batch_events, progress.run.run_id)[0]
    progress.update(index_version=written_index or baseline.index_version)
    crash_point(crashpoints.BATCH_INDEX_COMMITTED)
    log.info(
        "batch: %s new records folded into the event index (%s dates); view dates %s",
        counted["records"],
        len(fold.index_dates),
        [str(d) for d in fold.view_dates],
    )
    return _rewrite_view(spark, lake, fold.view_dates, progress)


@dataclass(frozen=True)
class Fold:
    """The dates folding new winners into the index rewrote (index) and left to rewrite (view)."""

    index_dates: list[date]
    view_dates: list[date]


def fold_into_index(
    spark: SparkSession,
    lake: LakeLayout,
    new_winners: DataFrame,
    baseline: BatchRun,
    counted: Any,
    records_in: int,
    progress: RunProgress,
) -> Fold:
    """Fold ``new_winners`` (deduplicated valid copies of the new records) into the index,
    record the run's counts over all records, and rewrite the index's affected dates in one
    commit tagged with the run id. ``counted``: the new records' ``records`` and ``valid``."""
    index = read_snapshot(spark, lake.batch_events, _index_version(spark, lake))
    touched = new_winners.select("event_id")
    old = _old_rows(index, touched).persist()
    try:
        candidate_dates = _candidate_dates(old, new_winners)
        merged = _merged_winners(index, touched, new_winners, candidate_dates).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        try:
            totals = _compare(merged, old)
            view_dates = sorted(set(totals["landed"]) | set(totals["left"]))
            index_dates = sorted(set(view_dates) | set(candidate_dates["old"]))
            valid = baseline.valid + counted["valid"]
            distinct = baseline.valid - baseline.duplicates + totals["new_events"]
            run = progress.update(
                records_in=records_in,
                valid=valid,
                quarantined=records_in - valid,
                duplicates=valid - distinct,
                conflicting_duplicates=baseline.conflicting_duplicates
                - totals["was_conflicting"]
                + totals["conflicting"],
                dates_rebuilt=view_dates,
            )
            if index_dates:
                _rewrite_index(index, touched, merged, index_dates, lake.batch_events, run.run_id)
        finally:
            merged.unpersist()
    finally:
        old.unpersist()
    return Fold(index_dates, view_dates)


def _index_version(spark: SparkSession, lake: LakeLayout) -> int:
    version = table_version(spark, lake.batch_events)
    assert version is not None  # index_matches found the table
    return version


def _old_rows(index: DataFrame, touched: DataFrame) -> DataFrame:
    """The index rows of the touched event_ids, from the event_id column of every date: a
    conflicting twin can sit on any day. Small: the ids the new records name."""
    return index.select(
        "event_id",
        F.col("event_date").alias("old_date"),
        *(F.col(c).alias(f"old_{c}") for c in _RECEIVED_IDENTITY),
        F.size(CONTENT_FINGERPRINTS).alias("old_contents"),
    ).join(touched, "event_id", "left_semi")


def _candidate_dates(old: DataFrame, new_winners: DataFrame) -> Any:
    """The dates the touched ids sit on (``old``) and the new copies' dates (``new``).

    One job for both sets: each collect is a job, and a job's fixed cost is most of what a
    day's worth of ids costs on a small cluster.
    """
    return (
        old.agg(F.collect_set("old_date").alias("old"))
        .crossJoin(new_winners.agg(F.collect_set(event_date_of_event()).alias("new")))
        .first()
    )


def _merged_winners(
    index: DataFrame, touched: DataFrame, new_winners: DataFrame, dates: Any
) -> DataFrame:
    """The winners over all records of the touched ids, as event index rows."""
    in_candidates = F.col("event_date").isin(sorted(set(dates["old"]) | set(dates["new"])))
    return (
        index.where(in_candidates)
        .join(touched, "event_id", "left_semi")
        .drop("event_date")
        .unionByName(new_winners)
        .transform(merge_first_received)
        .transform(event_index_rows)
    )


def _compare(merged: DataFrame, old: DataFrame) -> Any:
    """Which touched ids changed winner (the dates they left and landed on), how many are new,
    and how many were and are conflicting."""
    compared = merged.join(old, "event_id", "left")
    same_winner = F.col("old_date").isNotNull()
    for name in _RECEIVED_IDENTITY:
        same_winner = same_winner & (F.col(name) == F.col(f"old_{name}"))
    changed = ~same_winner
    return compared.agg(
        F.collect_set(F.when(changed, F.col("event_date"))).alias("landed"),
        F.collect_set(F.when(changed, F.col("old_date"))).alias("left"),
        F.count(F.when(F.col("old_date").isNull(), True)).alias("new_events"),
        F.count(F.when(F.col("old_contents") > 1, True)).alias("was_conflicting"),
        F.count(F.when(F.size(CONTENT_FINGERPRINTS) > 1, True)).alias("conflicting"),
    ).first()


def _rewrite_index(
    index: DataFrame,
    touched: DataFrame,
    merged: DataFrame,
    dates: Sequence[date],
    path: str,
    run_id: str,
) -> None:
    """Replace the index's ``dates``: their untouched rows, and the merged winners."""
    columns = BATCH_EVENTS_SCHEMA.fieldNames()
    kept = (
        index.where(F.col("event_date").isin(list(dates)))
        .join(touched, "event_id", "left_anti")
        .select(*columns)
    )
    replace_event_index(kept.unionByName(merged.select(*columns)), path, run_id, dates)


def _rewrite_view(
    spark: SparkSession, lake: LakeLayout, dates: Sequence[date], progress: RunProgress
) -> BatchRun:
    """Rebuild the view's ``dates`` from the index as the run just left it."""
    run = progress.run
    if not dates:
        return progress.update(windows_written=0)
    events = (
        spark.read.format("delta").load(lake.batch_events).where(F.col("event_date").isin(dates))
    )
    replace_minutes(minute_rows(events, run.started_at), lake.batch, run.run_id, dates)
    view_version, written = run_commit(spark, lake.batch, run.run_id)
    return progress.update(windows_written=written, view_version=view_version)
