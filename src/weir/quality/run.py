"""`weir dq run`: pin the tables, measure them, validate with Great Expectations, record.

One check run:

1. finds the latest complete successful batch run (its cutoff, horizon and counts), whose id
   becomes the run's ``run_id``: the results of a run are the verdict on that batch run's
   data, which is what the merge gate reads (weir.quality.gate);
2. pins every table the chosen suites need at its latest Delta version (weir.quality.tables);
3. measures each table in one Spark pass (weir.quality.metrics) and collects the small result;
4. validates the tables' schemas and the metrics frames with GX (weir.quality.validate);
5. appends one row per expectation to ``dq/results`` and publishes the Data Docs site to
   ``dq/docs/``.

Critical failures make :func:`require_passed` raise :class:`ChecksFailedError` (exit 3).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
from pyspark.sql import SparkSession

from weir.config import ConfigError, WeirConfig
from weir.contract.rules import all_reasons
from weir.control import COMPLETE_MODES, BatchRun, latest_batch_run
from weir.entry import run_until_stopped
from weir.errors import ChecksFailedError
from weir.lake import LakeLayout
from weir.quality import metrics as m
from weir.quality import suites as s
from weir.quality.docs import publish_site
from weir.quality.outcomes import CheckOutcome
from weir.quality.results import append_results
from weir.quality.tables import Snapshot, pin, relative_name
from weir.quality.validate import Validation, validate
from weir.schemas import MINUTE_SCHEMA, QUARANTINE_SCHEMA, RAW_SCHEMA
from weir.speed_table import newest_versions

log = logging.getLogger("weir.dq")

BATCH_EVENTS_TABLE = "batch/events"
# Spark passes run at once (CheckPlan.measure says why).
MEASURING_THREADS = 4


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class CheckReport:
    """What one check run found. ``agreement``: the share of common windows on which batch
    and speed agree, over every day compared (None when none was or the suite did not run)."""

    run_id: str
    run_time: datetime
    batch_run_id: Optional[str]
    suites: tuple[str, ...]
    outcomes: tuple[CheckOutcome, ...]
    docs_index: str
    agreement: Optional[float] = None
    skipped: tuple[str, ...] = field(default_factory=tuple)

    @property
    def critical_failures(self) -> list[CheckOutcome]:
        return [o for o in self.outcomes if o.critical_failure]

    @property
    def warnings(self) -> list[CheckOutcome]:
        """Failed checks of severity warning."""
        return [o for o in self.outcomes if not o.success and o.severity != "critical"]

    @property
    def passed(self) -> bool:
        """No critical check failed."""
        return not self.critical_failures


def describe(outcome: CheckOutcome) -> str:
    """One line per failed check: where, what, observed against the threshold."""
    return (
        f"{outcome.suite}: {outcome.table_name} {outcome.expectation} observed "
        f"{outcome.observed_value}, threshold {outcome.threshold}"
    )


def require_passed(report: CheckReport) -> None:
    """Raise :class:`ChecksFailedError` (exit 3) naming the critical checks that failed."""
    failures = report.critical_failures
    if failures:
        listed = "; ".join(describe(o) for o in failures)
        raise ChecksFailedError(
            f"{len(failures)} critical data-quality check(s) failed in run {report.run_id}: "
            f"{listed}"
        )


def chosen_suites(names: Optional[Sequence[str]]) -> tuple[str, ...]:
    """The suites to run (all when none named), in catalogue order; ConfigError naming
    ``--suite`` for an unknown one (exit 2, before Spark starts)."""
    if not names:
        return s.SUITES
    unknown = s.unknown_suites(names)
    if unknown:
        raise ConfigError(
            "--suite", f"unknown suite {unknown[0]!r}; choose from {', '.join(s.SUITES)}"
        )
    return tuple(name for name in s.SUITES if name in names)


# --- Building the validations -------------------------------------------------------------------


def _one_row(values: dict) -> pd.DataFrame:
    return pd.DataFrame([values])


class CheckPlan:
    """The validations of one run, built suite by suite from pinned tables and their metrics.

    ``snapshots`` (by lake path) are used instead of pinning those tables: tests hand in small
    explicit frames this way.
    """

    def __init__(
        self,
        spark: SparkSession,
        config: WeirConfig,
        run_time: datetime,
        batch_run: Optional[BatchRun],
        snapshots: Optional[dict[str, Snapshot]] = None,
    ) -> None:
        self.spark = spark
        self.config = config
        self.checks = config.dq.checks
        self.lake = LakeLayout.from_config(config)
        self.run_time = run_time
        self.batch_run = batch_run
        self.cutoff = None if batch_run is None else batch_run.cutoff
        self.snapshots: dict[str, Snapshot] = dict(snapshots or {})
        self.zone: dict[str, Optional[dict]] = {}
        self.hours: dict[str, list[dict]] = {}
        self.days: Optional[list[dict]] = None
        self.validations: list[Validation] = []
        self.skipped: list[str] = []
        self.agreement: Optional[float] = None

    def table(self, path: str) -> Snapshot:
        if path not in self.snapshots:
            snapshot = pin(self.spark, self.lake.root, path)
            if path == self.lake.speed and snapshot.has_columns(MINUTE_SCHEMA):
                # SPEED stores versions of each window; its checks are about the view.
                snapshot = dataclasses.replace(snapshot, frame=newest_versions(snapshot.frame))
            self.snapshots[path] = snapshot
        return self.snapshots[path]

    def versions(self) -> dict[str, Optional[int]]:
        versions = {snapshot.name: snapshot.version for snapshot in self.snapshots.values()}
        if self.batch_run is not None:
            versions[BATCH_EVENTS_TABLE] = self.batch_run.index_version
        return versions

    def add(self, name: str, suite: str, frame: object, expectations: list) -> None:
        self.validations.append(Validation(name, suite, frame, tuple(expectations)))

    def add_schema(self, suite: str, snapshot: Snapshot, schema, schema_name: str) -> None:
        expectations = s.schema_expectations(
            schema, schema_name, self.checks.table_schema, snapshot.name
        )
        self.add(f"{suite}.schema", suite, snapshot.frame, expectations)

    # A zone (RAW, QUARANTINE) is measured once, for its own suite and for batch_run's.
    def zone_metrics(self, path: str, schema, reasons=None) -> Optional[dict]:
        if path not in self.zone:
            snapshot = self.table(path)
            if not snapshot.has_columns(schema):
                self.zone[path] = None
            else:
                measure = m.zone_metrics(schema, self.cutoff, reasons)
                self.zone[path] = snapshot.frame.transform(measure).first().asDict()
        return self.zone[path]

    def raw(self) -> None:
        snapshot = self.table(self.lake.raw)
        self.add_schema(s.RAW, snapshot, RAW_SCHEMA, "RAW_SCHEMA")
        metrics = self.zone_metrics(self.lake.raw, RAW_SCHEMA)
        if metrics is not None:
            expectations = s.not_null_expectations(
                RAW_SCHEMA, self.checks.not_null_keys, snapshot.name
            )
            self.add("raw.metrics", s.RAW, _one_row(metrics), expectations)

    def quarantine(self) -> None:
        snapshot = self.table(self.lake.quarantine)
        self.add_schema(s.QUARANTINE, snapshot, QUARANTINE_SCHEMA, "QUARANTINE_SCHEMA")
        metrics = self.zone_metrics(self.lake.quarantine, QUARANTINE_SCHEMA, all_reasons())
        if metrics is not None:
            expectations = [
                *s.not_null_expectations(
                    QUARANTINE_SCHEMA, self.checks.not_null_keys, snapshot.name
                ),
                *s.unknown_reasons_expectation(self.checks.unknown_reasons, snapshot.name),
            ]
            self.add("quarantine.metrics", s.QUARANTINE, _one_row(metrics), expectations)

    def view_hours(self, path: str) -> list[dict]:
        if path not in self.hours:
            measured = self.table(path).frame.transform(m.hourly_view_metrics).collect()
            self.hours[path] = [row.asDict() for row in measured]
        return self.hours[path]

    def agreement_days(self) -> list[dict]:
        if self.days is None:
            batch, speed = self.table(self.lake.batch), self.table(self.lake.speed)
            horizon = None if self.batch_run is None else self.batch_run.horizon
            tolerance = self.checks.agreement.tolerance
            measured = m.agreement_by_day(batch.frame, speed.frame, tolerance, horizon).collect()
            self.days = [row.asDict() for row in measured]
        return self.days

    def measure(self, suites: Sequence[str]) -> None:
        """Pin the tables ``suites`` read and run their Spark passes, a few at a time: the
        passes are independent, and on small tables a pass is mostly the driver's latency
        (planning, scheduling, the Delta log), which concurrent passes overlap."""
        lake = self.lake
        paths = {
            s.RAW: [lake.raw],
            s.QUARANTINE: [lake.quarantine],
            s.SPEED: [lake.speed],
            s.BATCH: [lake.batch],
            s.UNIFIED: [lake.serving],
            s.BATCH_RUN: [lake.raw, lake.quarantine],
            s.AGREEMENT: [lake.batch, lake.speed],
        }
        needed = list(dict.fromkeys(path for suite in suites for path in paths[suite]))
        passes: dict[str, Callable[[], object]] = {}
        for suite in suites:
            if suite in (s.RAW, s.BATCH_RUN):
                passes["raw"] = lambda: self.zone_metrics(lake.raw, RAW_SCHEMA)
            if suite in (s.QUARANTINE, s.BATCH_RUN):
                passes["quarantine"] = lambda: self.zone_metrics(
                    lake.quarantine, QUARANTINE_SCHEMA, all_reasons()
                )
            if suite in (s.SPEED, s.BATCH, s.UNIFIED):
                path = {s.SPEED: lake.speed, s.BATCH: lake.batch, s.UNIFIED: lake.serving}[suite]
                passes[path] = lambda path=path: self._view_pass(path)
            if suite == s.AGREEMENT:
                passes["agreement"] = self._agreement_pass
        with ThreadPoolExecutor(max_workers=MEASURING_THREADS) as pool:
            for _ in pool.map(self.table, needed):
                pass
            for _ in pool.map(lambda measure: measure(), passes.values()):
                pass

    def _view_pass(self, path: str) -> None:
        if self.table(path).has_columns(MINUTE_SCHEMA):
            self.view_hours(path)

    def _agreement_pass(self) -> None:
        batch, speed = self.table(self.lake.batch), self.table(self.lake.speed)
        if batch.has_columns(MINUTE_SCHEMA) and speed.has_columns(MINUTE_SCHEMA):
            self.agreement_days()

    def view(self, suite: str, path: str) -> None:
        snapshot = self.table(path)
        self.add_schema(suite, snapshot, MINUTE_SCHEMA, "MINUTE_SCHEMA")
        if not snapshot.has_columns(MINUTE_SCHEMA):
            return
        hours = self.view_hours(path)
        totals = m.view_totals(hours)
        name = snapshot.name
        expectations = [
            *s.not_null_expectations(MINUTE_SCHEMA, self.checks.not_null_keys, name),
            *s.range_expectations(self.checks.ranges, name),
            *s.unique_keys_expectation(self.checks.unique_keys, name),
        ]
        newest = totals.pop(m.NEWEST_WINDOW_END)
        if suite == s.UNIFIED:
            totals[s.FRESHNESS_MINUTES] = m.freshness_minutes(newest, self.run_time)
            expectations += s.freshness_expectation(self.checks.freshness, name)
        self.add(f"{suite}.metrics", suite, _one_row(totals), expectations)
        if suite == s.UNIFIED:
            self.volume(name, hours, newest)

    def volume(self, table: str, hours: list[dict], newest: Optional[datetime]) -> None:
        by_hour = {
            m.utc_from_micros(hour[m.HOUR] * 1_000_000): hour[m.EVENTS]
            for hour in hours
            if hour[m.HOUR] is not None
        }
        config = self.checks.volume
        volumes = m.hourly_volume(by_hour, newest, config.trailing_hours)
        frame = pd.DataFrame(
            {
                m.HOUR: [v.hour.isoformat() for v in volumes],
                m.EVENTS: [v.events for v in volumes],
                "trailing_median": [v.trailing_median for v in volumes],
                s.VOLUME_RATIO: pd.Series([v.ratio for v in volumes], dtype="float64"),
            }
        )
        self.add("unified.volume", s.UNIFIED, frame, s.volume_expectation(config, table))

    def batch_run_checks(self) -> None:
        run = self.batch_run
        if run is None:
            self.skipped.append(f"{s.BATCH_RUN}: no successful batch run yet")
            return
        raw = self.zone_metrics(self.lake.raw, RAW_SCHEMA)
        quarantine = self.zone_metrics(self.lake.quarantine, QUARANTINE_SCHEMA, all_reasons())
        if raw is None or quarantine is None:
            self.skipped.append(f"{s.BATCH_RUN}: the raw or quarantine table is missing columns")
            return
        raw_in, quarantined = raw[m.ROWS_BEFORE_CUTOFF], quarantine[m.ROWS_BEFORE_CUTOFF]
        distinct = (
            None if run.valid is None or run.duplicates is None else run.valid - run.duplicates
        )
        metrics = {
            "raw_before_cutoff": raw_in,
            "valid": run.valid,
            "quarantined_before_cutoff": quarantined,
            s.RECONCILIATION_DIFFERENCE: None
            if run.valid is None
            else raw_in - run.valid - quarantined,
            s.QUARANTINE_RATIO: quarantined / raw_in if raw_in else 0.0,
            s.CONFLICTING_RATIO: None
            if distinct is None or run.conflicting_duplicates is None
            else (run.conflicting_duplicates / distinct if distinct else 0.0),
        }
        raw_name = relative_name(self.lake.root, self.lake.raw)
        quarantine_name = relative_name(self.lake.root, self.lake.quarantine)
        expectations = [
            *s.reconciliation_expectation(self.checks.reconciliation, raw_name),
            *s.ratio_expectation(
                "quarantine_ratio",
                s.QUARANTINE_RATIO,
                self.checks.quarantine_ratio,
                quarantine_name,
            ),
            *s.ratio_expectation(
                "conflicting_duplicates",
                s.CONFLICTING_RATIO,
                self.checks.conflicting_duplicates,
                BATCH_EVENTS_TABLE,
            ),
        ]
        frame = _one_row(metrics).astype({k: "float64" for k in metrics})
        self.add("batch_run.metrics", s.BATCH_RUN, frame, expectations)

    def agreement_checks(self) -> None:
        batch, speed = self.table(self.lake.batch), self.table(self.lake.speed)
        if not (batch.has_columns(MINUTE_SCHEMA) and speed.has_columns(MINUTE_SCHEMA)):
            self.skipped.append(f"{s.AGREEMENT}: the batch or speed view is missing")
            return
        config = self.checks.agreement
        days = self.agreement_days()
        self.agreement = m.overall_agreement(days)
        frame = pd.DataFrame(
            days, columns=["event_date", m.WINDOWS_COMPARED, m.WINDOWS_AGREEING, m.AGREEMENT]
        ).astype({m.AGREEMENT: "float64"})
        self.add("agreement.days", s.AGREEMENT, frame, s.agreement_expectation(config, speed.name))


def plan_checks(
    spark: SparkSession,
    config: WeirConfig,
    suites: Sequence[str],
    run_time: datetime,
    batch_run: Optional[BatchRun],
    snapshots: Optional[dict[str, Snapshot]] = None,
) -> CheckPlan:
    """Measure the tables ``suites`` need (one Spark pass each) and build their validations."""
    plan = CheckPlan(spark, config, run_time, batch_run, snapshots)
    started = time.monotonic()
    plan.measure(suites)
    log.info("dq: pinned and measured %s in %.1fs", ", ".join(suites), time.monotonic() - started)
    lake = plan.lake
    steps: dict[str, Callable[[], None]] = {
        s.RAW: plan.raw,
        s.QUARANTINE: plan.quarantine,
        s.SPEED: lambda: plan.view(s.SPEED, lake.speed),
        s.BATCH: lambda: plan.view(s.BATCH, lake.batch),
        s.UNIFIED: lambda: plan.view(s.UNIFIED, lake.serving),
        s.BATCH_RUN: plan.batch_run_checks,
        s.AGREEMENT: plan.agreement_checks,
    }
    for suite in suites:
        steps[suite]()
    return plan


def new_run_id(batch_run: Optional[BatchRun], run_time: datetime) -> str:
    """The batch run's id; without one, an id of the check run's own (``dq-<time>-<hex>``)."""
    if batch_run is not None:
        return batch_run.run_id
    return f"dq-{run_time:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def run_checks(
    spark: SparkSession,
    config: WeirConfig,
    suites: Optional[Sequence[str]] = None,
    clock: Callable[[], datetime] = _utc_now,
) -> CheckReport:
    """Run ``suites`` (all by default; module doc), append their rows to ``dq/results`` in one
    commit and publish the Data Docs. Reads each table at one pinned version. Does not raise
    for failed checks (see :func:`require_passed`)."""
    chosen = chosen_suites(suites)
    lake = LakeLayout.from_config(config)
    batch_run = latest_batch_run(spark, lake, COMPLETE_MODES)
    run_time = clock()
    run_id = new_run_id(batch_run, run_time)
    plan = plan_checks(spark, config, chosen, run_time, batch_run)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="weir-dq-docs-") as folder:
        outcomes = validate(plan.validations, run_id, run_time, plan.versions(), Path(folder))
        append_results(spark, lake, run_id, run_time, outcomes)
        docs_index = publish_site(spark, Path(folder), lake.dq_docs)
    report = CheckReport(
        run_id=run_id,
        run_time=run_time,
        batch_run_id=None if batch_run is None else batch_run.run_id,
        suites=chosen,
        outcomes=tuple(outcomes),
        docs_index=docs_index,
        agreement=plan.agreement,
        skipped=tuple(plan.skipped),
    )
    log.info(
        "dq: run %s: %s checks, %s critical failed, %s warnings; validated and recorded in %.1fs",
        run_id,
        len(outcomes),
        len(report.critical_failures),
        len(report.warnings),
        time.monotonic() - started,
    )
    return report


def check_every(
    spark: SparkSession,
    config: WeirConfig,
    suites: Optional[Sequence[str]],
    interval_s: float,
    stop: threading.Event,
    on_report: Optional[Callable[[CheckReport], None]] = None,
    clock: Callable[[], float] = time.monotonic,
) -> Optional[CheckReport]:
    """:func:`run_checks` every ``interval_s`` seconds (start to start) until ``stop`` is set;
    returns the last report (None if ``stop`` was set before the first run). Failed checks do
    not end the loop; a failure to run does (it raises)."""
    last: Optional[CheckReport] = None
    while not stop.is_set():
        started = clock()
        last = run_checks(spark, config, suites)
        if on_report is not None:
            on_report(last)
        pause = started + interval_s - clock()
        if pause > 0:
            stop.wait(pause)
    return last


def run_dq(
    spark: SparkSession,
    config: WeirConfig,
    suites: Optional[Sequence[str]],
    interval_s: Optional[int],
    on_report: Optional[Callable[[CheckReport], None]] = None,
) -> Optional[CheckReport]:
    """One check run (``interval_s`` None), or one every ``interval_s`` seconds until SIGTERM /
    SIGINT (the current run finishes first). Raises :class:`ChecksFailedError` (exit 3) when
    the last run's critical checks failed."""
    if interval_s is None:
        report = run_checks(spark, config, suites)
        if on_report is not None:
            on_report(report)
    else:
        reports: list[Optional[CheckReport]] = [None]

        def loop(stop: threading.Event) -> None:
            reports[0] = check_every(spark, config, suites, interval_s, stop, on_report)

        run_until_stopped(loop, "the current check run")
        report = reports[0]
    if report is not None:
        require_passed(report)
    return report
