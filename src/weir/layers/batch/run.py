"""``rebuild_batch``: one batch run, from the request to its record in ``_control/batch_runs``.

A run is given a cutoff C. It reads every RAW record with ``ingest_time < C`` from ONE Delta
snapshot version (recorded), so a stream appending to RAW meanwhile changes nothing it sees.
The shared contract transforms classify the records, keep the valid events, deduplicate them
across that whole history (the first received copy wins, even against a twin read by an
earlier run) and aggregate them per device-minute into the BATCH view. The horizon
H = C - allowed lateness, floored to the minute, is recorded with the run: the merge serves
batch rows with ``window_end <= H``.

Modes, each ONE atomic Delta commit to the view (or none when nothing changed):

* ``incremental`` (default): replace only the ``event_date`` partitions whose rows can differ
  from the previous complete run's (:mod:`weir.layers.batch.plan`, docs/batch.md);
* ``full``: overwrite the whole view;
* ``range``: replace the dates ``--from``..``--to``, a repair tool.

Re-running with the same cutoff gives the same rows (``computed_at`` aside).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import datetime
from typing import Callable, Optional

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir import crashpoints
from weir.config import ConfigError, WeirConfig
from weir.contract.dedup import CONTENT_FINGERPRINTS, RECEIVED_COPIES
from weir.control import (
    COMPLETE_MODES,
    MODE_INCREMENTAL,
    RUN_FAILED,
    RUN_SUCCEEDED,
    BatchRun,
    batch_runs,
    record_batch_run,
)
from weir.control.fences import hold_fence
from weir.control.runs import append_failed_run, iso, new_run_id, utc_now
from weir.crashpoints import crash_point
from weir.delta import read_snapshot
from weir.errors import WeirError, describe_error
from weir.lake import LakeLayout
from weir.layers.batch.adopt import adopt_files, input_exists
from weir.layers.batch.index import incremental_from_index, index_matches
from weir.layers.batch.plan import (
    Plan,
    RunProgress,
    changed_dates,
    latest_finished,
    plan_run,
    raw_version,
    unchanged_since,
)
from weir.layers.batch.request import (
    RebuildRequest,
    batch_horizon,
    check_cutoff_moves_forward,
)
from weir.layers.batch.tables import replace_event_index, replace_minutes, run_commit
from weir.layers.batch.transforms import (
    event_index_rows,
    first_received_events,
    minute_rows,
    received_before,
)

log = logging.getLogger("weir.layers.batch")


def rebuild_batch(
    spark: SparkSession,
    config: WeirConfig,
    request: RebuildRequest,
    clock: Callable[[], datetime] = utc_now,
) -> BatchRun:
    """Rebuild the batch view as of ``request.cutoff`` and record the run in ``_control``.

    Atomic (one Delta commit to the view, or none when nothing changed) and idempotent (the
    same cutoff gives the same rows, ``computed_at`` aside). With ``request.input``, first
    adopts the files under it into RAW (:func:`~weir.layers.batch.adopt.adopt_files`,
    idempotent). Raises :class:`ConfigError`, with nothing written, when an incremental or
    range run would move the view back before the last successful run's cutoff or the input
    does not exist; raises :class:`WeirError` after recording a failed run.
    """
    lake = LakeLayout.from_config(config)
    # A missing input is the caller's mistake: refused before the fence writes anything.
    if request.input is not None and not input_exists(spark, request.input):
        raise ConfigError("--input", f"{request.input} does not exist (no file under it)")
    # One batch run at a time (FenceHeldError, nothing read or written): two at once would
    # both plan from the same previous run and their replaceWhere commits, on different dates
    # or in either order, could leave a view that neither run's record describes.
    with hold_fence(config, lake.writer_fences, BATCH_FENCE) as fence:
        return _rebuild_fenced(spark, config, lake, request, clock, fence.raise_if_lost)


BATCH_FENCE = "batch"  # the writer fence of `weir batch rebuild` (weir.control.fences)


def _rebuild_fenced(
    spark: SparkSession,
    config: WeirConfig,
    lake: LakeLayout,
    request: RebuildRequest,
    clock: Callable[[], datetime],
    raise_if_lost: Callable[[], None],
) -> BatchRun:
    succeeded = [run for run in batch_runs(spark, lake) if run.status == RUN_SUCCEEDED]
    check_cutoff_moves_forward(request, latest_finished(succeeded))
    baseline = None
    if request.mode == MODE_INCREMENTAL:
        baseline = latest_finished([run for run in succeeded if run.mode in COMPLETE_MODES])
    started = clock()
    progress = RunProgress(
        BatchRun(
            run_id=new_run_id("batch", started),
            status=RUN_FAILED,
            mode=request.mode,
            cutoff=request.cutoff,
            horizon=batch_horizon(request.cutoff, config.timing.allowed_lateness_minutes),
            date_from=request.date_from,
            date_to=request.date_to,
            started_at=started,
        )
    )
    try:
        done = _execute(spark, lake, request, baseline, progress)
        done = dataclasses.replace(done, status=RUN_SUCCEEDED, finished_at=clock())
        crash_point(crashpoints.BATCH_BEFORE_RECORD)
        raise_if_lost()  # taken over (this run looked dead): the other run records
        record_batch_run(spark, lake, done)
    except Exception as error:
        append_failed_run(spark, lake.batch_runs, progress.run, error, clock())
        reason = str(error) if isinstance(error, WeirError) else describe_error(error)
        raise WeirError(f"batch run {progress.run.run_id} failed: {reason}") from error
    log.info(
        "batch run %s %s: mode=%s cutoff=%s horizon=%s raw_version=%s windows_written=%s",
        done.run_id,
        done.status,
        done.mode,
        iso(done.cutoff),
        iso(done.horizon),
        done.raw_version,
        done.windows_written,
    )
    return done


def _execute(
    spark: SparkSession,
    lake: LakeLayout,
    request: RebuildRequest,
    baseline: Optional[BatchRun],
    progress: RunProgress,
) -> BatchRun:
    """The run proper; fills in ``progress`` as it goes, for a failure record."""
    step = time.monotonic()
    if request.input is not None:
        adopt_files(spark, lake, request.input)
    version = raw_version(spark, lake)
    progress.update(raw_version=version)
    raw = received_before(read_snapshot(spark, lake.raw, version), request.cutoff)
    records_in = raw.count()
    if records_in == 0:
        raise WeirError(
            f"the raw table {lake.raw} (version {version}) holds no record ingested before "
            f"{iso(request.cutoff)}: nothing to rebuild from"
        )
    log.info("batch: raw version %s, %s records before the cutoff", version, records_in)

    plan = plan_run(spark, lake, request, baseline, version)
    progress.update(
        mode=plan.mode,
        baseline_run_id=plan.baseline_run_id,
        changes_since=plan.changes_since,
        dates_rebuilt=None if plan.dates is None else list(plan.dates),
    )
    if plan.changes_since is not None and baseline is not None:
        done = _from_baseline(spark, lake, raw, records_in, baseline, plan, progress)
        if done is not None:
            return done
    if plan.mode in COMPLETE_MODES:
        # The index of every winner, for the next incremental run, written straight from the
        # dedup; the rest of the run reads it back. Cheaper than caching the winners (an
        # in-memory copy of all history, spilling to disk at scale) and reading the cache
        # twice: the index is columnar, partitioned by date, and read column-pruned.
        run_id = progress.run.run_id
        replace_event_index(
            event_index_rows(first_received_events(raw)), lake.batch_events, run_id, None
        )
        index_version = run_commit(spark, lake.batch_events, run_id)[0]
        assert index_version is not None  # an overwrite of the whole table always commits
        progress.update(index_version=index_version)
        crash_point(crashpoints.BATCH_INDEX_COMMITTED)
        winners = read_snapshot(spark, lake.batch_events, index_version)
        return _view_from_winners(spark, lake, raw, records_in, winners, plan, progress, step)
    # A range run reads the same history but leaves the index as the last complete run
    # wrote it: its winners, in the index's shape, are computed once and read twice.
    winners = event_index_rows(first_received_events(raw)).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return _view_from_winners(spark, lake, raw, records_in, winners, plan, progress, step)
    finally:
        winners.unpersist()


def _from_baseline(
    spark: SparkSession,
    lake: LakeLayout,
    raw: DataFrame,
    records_in: int,
    baseline: BatchRun,
    plan: Plan,
    progress: RunProgress,
) -> Optional[BatchRun]:
    """An incremental run that need not read all history: nothing new since the baseline (the
    view stays), or the new records folded into the event index. None: scan all history."""
    index_current = index_matches(spark, lake, baseline)
    assert plan.changes_since is not None
    unchanged = unchanged_since(raw, plan.changes_since, records_in, baseline)
    if unchanged is not None:
        log.info("batch: no raw record new since run %s; view untouched", baseline.run_id)
        index_version = baseline.index_version if index_current else None
        return progress.update(windows_written=0, index_version=index_version, **unchanged)
    if index_current:
        return incremental_from_index(spark, lake, raw, records_in, baseline, plan, progress)
    return None


def _view_from_winners(
    spark: SparkSession,
    lake: LakeLayout,
    raw: DataFrame,
    records_in: int,
    winners: DataFrame,
    plan: Plan,
    progress: RunProgress,
    step: float,
) -> BatchRun:
    """The counts of a run that read all history, and its view rewrite, from its winners as
    event index rows (the index version just written, or a range run's own)."""
    totals = winners.agg(
        F.count(F.lit(1)).alias("distinct_events"),
        F.coalesce(F.sum(RECEIVED_COPIES), F.lit(0)).alias("valid"),
        F.count(F.when(F.size(CONTENT_FINGERPRINTS) > 1, True)).alias("conflicting"),
    ).first()
    valid = int(totals["valid"])
    run = progress.update(
        records_in=records_in,
        valid=valid,
        quarantined=records_in - valid,
        duplicates=valid - int(totals["distinct_events"]),
        conflicting_duplicates=int(totals["conflicting"]),
    )
    log.info(
        "batch: %s valid (%s distinct events), %s quarantined, %.1fs",
        valid,
        totals["distinct_events"],
        records_in - valid,
        time.monotonic() - step,
    )
    if plan.changes_since is not None:
        plan = dataclasses.replace(plan, dates=changed_dates(raw, winners, plan.changes_since))
        run = progress.update(dates_rebuilt=list(plan.dates))
    if plan.dates is not None and not plan.dates:
        log.info("batch: nothing changed since run %s; view untouched", plan.baseline_run_id)
        return dataclasses.replace(run, windows_written=0)
    replace_minutes(
        minute_rows(winners, run.started_at, plan.dates), lake.batch, run.run_id, plan.dates
    )
    view_version, written = run_commit(spark, lake.batch, run.run_id)
    log.info(
        "batch: %s windows written (%s dates) in view version %s, %.1fs",
        written,
        "all" if plan.dates is None else len(plan.dates),
        view_version,
        time.monotonic() - step,
    )
    return dataclasses.replace(run, windows_written=written, view_version=view_version)
