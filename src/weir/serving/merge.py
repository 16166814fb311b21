"""``run_merge``: publish the unified ``telemetry_minute`` table, incrementally, and record it.

A merge pins its inputs (the latest complete batch run's horizon H, the versions of BATCH,
SPEED and the unified table), works out its scope from what changed since the previous merge
(:func:`~weir.serving.rule.merge_scope`), diffs the wanted rows against the table inside that
scope and applies the difference in ONE Delta MERGE (:mod:`weir.serving.changes`). It is
retried after a conflicting commit, and recorded in ``_control/merge_runs``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from typing import Callable, Optional

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from weir import crashpoints
from weir.config import WeirConfig
from weir.control import (
    COMPLETE_MODES,
    RUN_FAILED,
    RUN_SUCCEEDED,
    BatchRun,
    MergeRun,
    batch_runs,
    latest_merge_run,
    record_merge_run,
)
from weir.control.runs import append_failed_run, iso, new_run_id, utc_now
from weir.crashpoints import crash_point
from weir.delta import (
    CONFLICTS,
    changed_partitions,
    ensure_table,
    read_snapshot,
    retry_conflicts,
    table_version,
    tagged_commit,
)
from weir.errors import WeirError, describe_error
from weir.lake import LakeLayout
from weir.quality.gate import GateDecision, gate_decision
from weir.schemas import MINUTE_PARTITION_COLUMNS, MINUTE_SCHEMA
from weir.serving.changes import apply_changes, serving_changes
from weir.serving.rule import PARTITION_COLUMN, MergeScope, merge_scope, serving_rule
from weir.speed_table import newest_versions

log = logging.getLogger("weir.serving")

MERGE_ATTEMPTS = 5  # one try and four retries after conflicting commits


class ServingMovedError(Exception):
    """The unified table changed data between the diff and the commit: diff again (retried)."""


def changed_dates(
    spark: SparkSession, path: str, since_version: Optional[int], until_version: Optional[int]
) -> Optional[frozenset]:
    """The event dates where commits ``since_version`` (excluded) to ``until_version``
    (included) of a minute table changed data; None when that cannot be known
    (:func:`weir.delta.changed_partitions`)."""
    values = changed_partitions(spark, path, since_version, until_version, PARTITION_COLUMN)
    return None if values is None else frozenset(date.fromisoformat(v) for v in values)


def read_minutes(spark: SparkSession, path: str, version: Optional[int]) -> DataFrame:
    """A minute table at ``version`` in ``MINUTE_SCHEMA`` order; empty when there is none."""
    if version is None:
        return spark.createDataFrame([], MINUTE_SCHEMA)
    return read_snapshot(spark, path, version).select(*MINUTE_SCHEMA.fieldNames())


def read_speed_at(spark: SparkSession, path: str, version: Optional[int]) -> DataFrame:
    """The speed view at ``version``, one row per window (SPEED stores versions of each
    window: :mod:`weir.speed_table`); empty when there is none."""
    return newest_versions(read_minutes(spark, path, version))


@dataclass(frozen=True)
class Inputs:
    """What one merge attempt reads: the batch run H comes from, and pinned table versions."""

    batch_run: Optional[BatchRun]
    batch_version: Optional[int]
    speed_version: Optional[int]
    serving_version: Optional[int]
    blocked: Optional[GateDecision] = None  # the newer batch run the gate refused, if any

    @property
    def horizon(self) -> Optional[datetime]:
        return None if self.batch_run is None else self.batch_run.horizon


def served_batch(runs: list[BatchRun]) -> tuple[Optional[BatchRun], Optional[int]]:
    """The batch run whose horizon H to serve, and the BATCH version to serve it with (pure).

    Both come from ONE read of ``_control/batch_runs``, never from the view's latest version:
    a batch run commits its view first and records itself after, so the latest version can
    be a view no recorded run vouches for yet (or ever: a run killed between the two). H is
    the latest successful complete run's; the version is the latest ``view_version`` any
    successful run recorded (a later range run's repair included; a run that changed nothing
    records none, the view it left being the one before). None when no run recorded a
    version (records written before ``view_version`` existed): the caller then reads the
    view's version after this read, which cannot be older than the runs it saw.
    """
    succeeded = sorted(
        (run for run in runs if run.status == RUN_SUCCEEDED),
        key=lambda run: (run.finished_at is not None, run.finished_at, run.started_at),
    )
    complete = [run for run in succeeded if run.mode in COMPLETE_MODES]
    versions = [run.view_version for run in succeeded if run.view_version is not None]
    return (complete[-1] if complete else None), (versions[-1] if versions else None)


def pin_inputs(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout, previous: Optional[MergeRun]
) -> Inputs:
    """The batch run to serve, the BATCH version that goes with it, and the current versions
    of SPEED and the unified table.

    H and the BATCH version come from one read of ``_control/batch_runs``
    (:func:`served_batch`), so a batch run between its view commit and its record cannot
    make the merge pair a new H with an old view, nor publish a view before its run is
    recorded (and gated). The batch run is the latest complete one, unless the data-quality
    gate refuses it: then the batch run and BATCH version ``previous`` served stay (time
    travel past the refused run's rewrite), so SPEED's new windows are still published but
    the refused run is not. Independent small reads, mostly Delta and Py4J round trips: side
    by side, they cost the slowest one instead of the sum (a merge's fixed cost is freshness
    lost).
    """
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="weir-merge-pin") as pool:
        runs = pool.submit(batch_runs, spark, lake)
        speed_version, serving_version = pool.map(
            lambda path: table_version(spark, path), (lake.speed, lake.serving)
        )
        recorded = runs.result()
    batch_run, batch_version = served_batch(recorded)
    if batch_version is None:
        batch_version = table_version(spark, lake.batch)  # read after the runs: never older
    inputs = Inputs(batch_run, batch_version, speed_version, serving_version)
    if inputs.batch_run is None:
        return inputs
    decision = gate_decision(spark, config, inputs.batch_run.run_id)
    if decision.publish:
        if not decision.checked and decision.mode != "off":
            log.info("merge: %s", decision.reason)
        return inputs
    log.warning("merge: data-quality gate: %s; serving the previous batch run", decision.reason)
    served = None if previous is None else previous.batch_run_id
    kept = None
    if served is not None:
        kept = next((run for run in recorded if run.run_id == served), None)
    return Inputs(
        batch_run=kept,
        batch_version=None if kept is None else previous.batch_version,
        speed_version=speed_version,
        serving_version=serving_version,
        blocked=decision,
    )


def scope_since(
    spark: SparkSession, lake: LakeLayout, previous: Optional[MergeRun], inputs: Inputs
) -> MergeScope:
    """The rows this merge re-derives: what changed since ``previous`` (None: everything)."""
    if previous is None:
        return merge_scope(None, inputs.horizon, None, None, None, first_merge=True)
    spans = (
        (lake.batch, previous.batch_version, inputs.batch_version),
        (lake.speed, previous.speed_version, inputs.speed_version),
        (lake.serving, previous.serving_version, inputs.serving_version),
    )
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="weir-merge-log") as pool:
        batch_dates, speed_dates, serving_dates = pool.map(
            lambda span: changed_dates(spark, *span), spans
        )
    return merge_scope(previous.horizon, inputs.horizon, batch_dates, speed_dates, serving_dates)


def _check_unmoved(spark: SparkSession, path: str, diffed: int, now: Optional[int]) -> None:
    """Raise :class:`ServingMovedError` if data changed in ``path`` after version ``diffed``."""
    moved = changed_dates(spark, path, diffed, now)
    if moved is None or moved:
        raise ServingMovedError(f"{path} changed data after version {diffed} (now {now})")


def _merge_once(
    spark: SparkSession,
    config: WeirConfig,
    lake: LakeLayout,
    run: MergeRun,
    previous: Optional[MergeRun],
) -> MergeRun:
    """One attempt: pin the inputs, work out the scope, diff, commit at most once."""
    step = time.monotonic()
    ensure_table(spark, lake.serving, MINUTE_SCHEMA, MINUTE_PARTITION_COLUMNS)
    inputs = pin_inputs(spark, config, lake, previous)
    run = dataclasses.replace(
        run,
        blocked_batch_run_id=None if inputs.blocked is None else inputs.blocked.batch_run_id,
        previous_run_id=None if previous is None else previous.run_id,
        horizon=inputs.horizon,
        batch_run_id=None if inputs.batch_run is None else inputs.batch_run.run_id,
        batch_version=inputs.batch_version,
        speed_version=inputs.speed_version,
        serving_version=inputs.serving_version,
    )
    scope = scope_since(spark, lake, previous, inputs)
    log.info(
        "merge %s: H=%s batch v%s speed v%s serving v%s; scope: %s (%.1fs)",
        run.run_id,
        "none (speed only)" if inputs.horizon is None else iso(inputs.horizon),
        inputs.batch_version,
        inputs.speed_version,
        inputs.serving_version,
        scope.describe(),
        time.monotonic() - step,
    )
    run = dataclasses.replace(run, scope=scope.kind, partitions_replaced=[])
    if scope.is_empty:
        return dataclasses.replace(run, rows_written=0, rows_deleted=0)
    return _diff_and_commit(spark, lake, run, inputs, scope, step)


def _diff_and_commit(
    spark: SparkSession,
    lake: LakeLayout,
    run: MergeRun,
    inputs: Inputs,
    scope: MergeScope,
    step: float,
) -> MergeRun:
    """The wanted rows in ``scope`` against the table's, and the difference in one MERGE."""
    wanted = serving_rule(
        read_minutes(spark, lake.batch, inputs.batch_version),
        read_speed_at(spark, lake.speed, inputs.speed_version),
        inputs.horizon,
    )
    current = read_minutes(spark, lake.serving, inputs.serving_version)
    for restriction in (scope.partition_filter(), scope.row_filter()):
        if restriction is not None:
            wanted, current = wanted.where(restriction), current.where(restriction)
    changes = serving_changes(wanted, current).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = changes.groupBy(PARTITION_COLUMN).count().collect()
        dates = sorted(row[PARTITION_COLUMN] for row in counts)
        log.info(
            "merge %s: %s changed rows on %s dates (%.1fs)",
            run.run_id,
            sum(row["count"] for row in counts),
            len(dates),
            time.monotonic() - step,
        )
        if not dates:
            return dataclasses.replace(run, rows_written=0, rows_deleted=0)
        assert inputs.serving_version is not None  # ensure_table created it
        _check_unmoved(
            spark, lake.serving, inputs.serving_version, table_version(spark, lake.serving)
        )
        apply_changes(spark, lake.serving, changes, dates, run.run_id)
    finally:
        changes.unpersist()
    commit = tagged_commit(spark, lake.serving, run.run_id)
    if commit is None:
        raise WeirError(f"merge {run.run_id}: its commit is missing from the history")
    # A data change that landed between the diff and the MERGE's own snapshot is invisible to
    # Delta's conflict check (it committed before the MERGE began): diff again. The next
    # attempt keeps the previous merge as baseline, so its scope covers that change and ours.
    _check_unmoved(spark, lake.serving, inputs.serving_version, commit.read_version)
    log.info(
        "merge %s: committed serving v%s (%s) in %.1fs",
        run.run_id,
        commit.version,
        ", ".join(f"{k}={v}" for k, v in sorted(commit.metrics.items()) if k.startswith("numT")),
        time.monotonic() - step,
    )
    return dataclasses.replace(
        run,
        serving_version=commit.version,
        partitions_replaced=dates,
        rows_written=commit.metric("numTargetRowsInserted") + commit.metric("numTargetRowsUpdated"),
        rows_deleted=commit.metric("numTargetRowsDeleted"),
        files_added=commit.metric("numTargetFilesAdded"),
        files_removed=commit.metric("numTargetFilesRemoved"),
    )


def run_merge(
    spark: SparkSession,
    config: WeirConfig,
    clock: Callable[[], datetime] = utc_now,
    sleep: Callable[[float], None] = time.sleep,
    attempts: int = MERGE_ATTEMPTS,
    baseline: Optional[MergeRun] = None,
) -> MergeRun:
    """Publish the unified table: BATCH (window_end <= H) ∪ SPEED (window_end > H).

    Atomic (one Delta commit, or none when nothing changed) and idempotent (the same inputs
    give the same rows and no commit). Safe beside a running stream: BATCH and SPEED are read
    at pinned versions. A conflicting commit on the unified table (``weir maintain``, a second
    merge) is retried up to ``attempts`` times with growing back-off. The run is recorded in
    ``_control/merge_runs``; a failure raises :class:`WeirError` after recording it.

    ``baseline``: the previous successful merge when the caller already holds it (the merge
    loop passes the run it made last), saving a read of ``_control/merge_runs``; None reads
    it. A baseline older than the latest merge is still correct, only wider: the changes since
    it include the later merge's commit, which the scope then covers as a foreign change.
    """
    lake = LakeLayout.from_config(config)
    started = clock()
    run = MergeRun(run_id=new_run_id("merge", started), status=RUN_FAILED, started_at=started)
    tries = 0

    def attempt() -> MergeRun:
        nonlocal tries
        tries += 1
        previous = baseline if baseline is not None else latest_merge_run(spark, lake)
        return _merge_once(spark, config, lake, run, previous)

    try:
        done, _ = retry_conflicts(
            attempt,
            attempts=attempts,
            what=f"merge {run.run_id} on {lake.serving}",
            hint="is another merge or `weir maintain` running? Try again when it has finished",
            retry_on=(*CONFLICTS, ServingMovedError),
            sleep=sleep,
        )
        done = dataclasses.replace(done, status=RUN_SUCCEEDED, attempts=tries, finished_at=clock())
        crash_point(crashpoints.MERGE_BEFORE_RECORD)
        record_merge_run(spark, lake, done)
    except Exception as error:
        append_failed_run(spark, lake.merge_runs, run, error, clock(), attempts=tries)
        if isinstance(error, WeirError):
            raise
        raise WeirError(f"merge {run.run_id} failed: {describe_error(error)}") from error
    log.info(
        "merge %s %s: scope=%s H=%s rows_written=%s rows_deleted=%s partitions=%s attempts=%s",
        done.run_id,
        done.status,
        done.scope,
        "none" if done.horizon is None else iso(done.horizon),
        done.rows_written,
        done.rows_deleted,
        len(done.partitions_replaced or []),
        done.attempts,
    )
    return done
