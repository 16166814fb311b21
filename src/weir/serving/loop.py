"""`weir merge --follow | --every SECONDS`: the merge, again and again, beside a running stream.

:func:`follow_merges` runs :func:`weir.serving.merge.run_merge` at a fixed interval until
``stop`` is set (SIGTERM / SIGINT through :func:`weir.entry.run_until_stopped`):

* **Start to start.** Merge k+1 starts ``interval_s`` after merge k started; a merge that takes
  longer than the interval is followed at once by the next (never overlapping: one thread, one
  merge at a time), and a warning says so. Waits are ``stop.wait(timeout)``, so a stop request
  ends a wait at once.
* **Stopping.** The first signal sets ``stop``: the running merge finishes (its one Delta
  commit, its ``_control/merge_runs`` record) and the loop returns. A second signal raises
  KeyboardInterrupt in the merge: that is safe too, a merge commits atomically or not at all,
  and the next merge repairs a commit that lost its run record (it is a foreign change in its
  scope, docs/serving.md).
* **Failures end the loop.** Conflicting commits are already retried inside ``run_merge``
  (5 attempts with back-off); any failure that reaches the loop (conflicts outlasting those
  retries, which means another merge is running; a missing or incompatible table; the JVM
  gone) ends it with :class:`WeirError` (exit 1) and the reason. No failure is tolerated: the
  ones ``run_merge`` does not retry are persistent, and looping over them would hide a broken
  deployment behind a log line per minute. A supervisor restarting the command loses nothing:
  every merge is incremental from the last *successful* one, whatever happened in between.

One INFO line per merge on the ``weir.merge`` logger: status, scope, rows written and deleted,
the serving version, the horizon H and the duration.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from pyspark.sql import SparkSession

from weir.config import WeirConfig
from weir.control import MergeRun
from weir.entry import interval_seconds, run_until_stopped
from weir.errors import WeirError
from weir.serving.merge import run_merge

log = logging.getLogger("weir.merge")

Merge = Callable[[SparkSession, WeirConfig], MergeRun]
OnMerge = Callable[[MergeRun, float], None]


def describe_merge(number: int, run: MergeRun, seconds: float) -> str:
    """The one line logged per merge (pure)."""
    horizon = "none (speed only)" if run.horizon is None else run.horizon.isoformat()
    version = f"v{run.serving_version}"
    commit = f"serving {version}" if run.committed else f"no commit ({version})"
    return (
        f"merge #{number} {run.run_id}: {run.status}, scope {run.scope}, "
        f"{run.rows_written or 0} rows written, {run.rows_deleted or 0} deleted, {commit}, "
        f"H {horizon}, {seconds:.1f}s"
    )


def chained_merges() -> Merge:
    """``run_merge``, each call taking the run the previous call made as its baseline.

    The loop is the only merger in a healthy deployment, so the run it made last is the latest
    successful merge; reading it back from ``_control/merge_runs`` (a table that gains a row a
    minute) is a Delta read per merge saved. Should another merger interleave, the baseline is
    merely older, which ``run_merge`` handles with a wider scope. The first call reads it.
    """
    last: Optional[MergeRun] = None

    def merge(spark: SparkSession, config: WeirConfig) -> MergeRun:
        nonlocal last
        last = run_merge(spark, config, baseline=last)
        return last

    return merge


def follow_merges(
    spark: SparkSession,
    config: WeirConfig,
    interval_s: float,
    stop: threading.Event,
    *,
    merge: Optional[Merge] = None,
    on_merge: Optional[OnMerge] = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Merge every ``interval_s`` seconds (start to start) until ``stop`` is set.

    Returns the number of merges run. ``on_merge(run, seconds)`` is called after each one
    (the benchmark records them; a test sets ``stop`` from it). A failed merge raises
    :class:`WeirError` naming how many merges succeeded before it (module doc: why no failure
    is tolerated). ``stop`` already set: no merge at all. ``merge`` defaults to
    :func:`chained_merges`.
    """
    if not interval_s > 0:
        raise WeirError(f"merge interval must be positive, got {interval_s}")
    if merge is None:
        merge = chained_merges()
    merges = 0
    log.info("merging every %gs until stopped (SIGTERM / Ctrl-C)", interval_s)
    while not stop.is_set():
        started = clock()
        try:
            run = merge(spark, config)
        except Exception as error:  # run_merge raises WeirError; anything else is reported too
            reason = error if isinstance(error, WeirError) else f"{type(error).__name__}: {error}"
            raise WeirError(
                f"merge loop ended after {merges} successful merge(s): {reason}"
            ) from error
        seconds = clock() - started
        merges += 1
        log.info("%s", describe_merge(merges, run, seconds))
        if on_merge is not None:
            on_merge(run, seconds)
        if stop.is_set():
            break
        pause = started + interval_s - clock()
        if pause > 0:
            stop.wait(pause)
        else:
            log.warning(
                "merge #%s took %.1fs, longer than the %gs interval: the next starts now",
                merges,
                seconds,
                interval_s,
            )
    log.info("merge loop stopped after %s merge(s)", merges)
    return merges


def merge_interval(config: WeirConfig, follow: bool, every: Optional[str]) -> Optional[int]:
    """The seconds between merges that ``--follow`` / ``--every DURATION`` ask for; None for
    one merge. :class:`ConfigError` for a bad ``--every`` (exit 2, before Spark starts)."""
    if every is not None:
        return interval_seconds(every, "--every")
    return config.timing.merge_interval_seconds if follow else None


def run_merges(spark: SparkSession, config: WeirConfig, interval_s: Optional[int]) -> int:
    """One merge (``interval_s`` None), or a merge every ``interval_s`` seconds until SIGTERM /
    SIGINT (the current merge finishes first). Returns the number of merges run."""
    if interval_s is None:
        run_merge(spark, config)
        return 1
    merges = 0

    def follow(stop: threading.Event) -> None:
        nonlocal merges
        merges = follow_merges(spark, config, interval_s, stop)

    run_until_stopped(follow, "the current merge")
    return merges


__all__ = ["chained_merges", "describe_merge", "follow_merges", "merge_interval", "run_merges"]
