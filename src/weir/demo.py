"""`weir demo`: the whole Lambda flow on the embedded local default, with a summary at the end.

    infra up -> simulate (Kafka, with faults) -> stream --available-now -> batch rebuild
    -> merge -> catalog sync -> summary (checked against the simulator's ledger)

The simulator writes ``minutes`` of history ending now, as fast as it can, into a topic of the
demo's own (the configured topic may hold anything). The stream archives every record to RAW,
quarantines the invalid ones and fills SPEED. The batch run's cutoff is taken after the stream
has drained, so BATCH is authoritative up to H = cutoff - allowed lateness and SPEED serves the
last minutes: the unified table shows both layers. Every count is reconciled with the ledger,
the ground truth of what was sent; a broken invariant fails the demo (exit 1).

The demo starts only the infra components that were not running and stops only those, and
deletes its topic, unless ``keep``. It writes to a lake it created (marked with
``.weir-demo-lake``) and refuses any other non-empty lake root. docs/demo.md walks through it.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.config import ConfigError, WeirConfig
from weir.control.runs import utc_now
from weir.errors import WeirError
from weir.lake import LakeLayout, local_path

log = logging.getLogger("weir.demo")

DEMO_LAKE_MARKER = ".weir-demo-lake"
DEMO_SOURCE = "kafka"


@dataclass(frozen=True)
class DemoOptions:
    """What `weir demo` takes: the simulated fleet and how long a history it sends."""

    devices: int = 50
    minutes: int = 40  # event-time history ending now; > allowed lateness, so both layers serve
    interval_s: float = 2.0  # between two readings of one device
    seed: int = 7
    keep: bool = False  # leave the infra running and the demo topic in place

    @property
    def readings(self) -> int:
        return int(self.devices * self.minutes * 60 / self.interval_s)


@dataclass
class Step:
    name: str
    seconds: float
    detail: str


@dataclass
class DemoReport:
    """What the demo did and found; ``checks`` are the invariants it verified."""

    topic: str = ""
    ledger_dir: str = ""
    steps: list[Step] = field(default_factory=list)
    zones: dict[str, int] = field(default_factory=dict)
    quarantine_by_reason: dict[str, int] = field(default_factory=dict)
    unified_by_layer: dict[str, dict[str, int]] = field(default_factory=dict)
    horizon: Optional[str] = None
    freshness_seconds: Optional[float] = None
    catalog_tables: list[str] = field(default_factory=list)
    sample_query: str = ""
    sample_rows: list[dict[str, Any]] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    # Data quality (weir dq run): expectations passed / critical failed / warnings, the
    # batch-vs-speed agreement, the failed checks' names and where the Data Docs are.
    dq_counts: dict[str, int] = field(default_factory=dict)
    dq_failed: list[str] = field(default_factory=list)
    dq_agreement: Optional[float] = None
    dq_docs: str = ""
    infra_started: list[str] = field(default_factory=list)
    infra_stopped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(self.checks.values())


def prepare_demo_lake(lake: LakeLayout) -> None:
    """Start from an empty lake, deleting only a lake an earlier demo created (it has the marker).

    Anything else at lake.root (a real lake, the project folder after a typo) is refused with
    ConfigError before anything is written, never deleted.
    """
    if not lake.root.startswith("file://"):
        raise ConfigError("lake.root", "weir demo runs on a local file:// lake only")
    root = Path(local_path(lake.root))
    if root.exists() and any(root.iterdir()):
        if not (root / DEMO_LAKE_MARKER).is_file():
            raise ConfigError(
                "lake.root",
                f"{root} is not empty and was not created by weir demo; refusing to delete it "
                "(point lake.root at a new folder, or remove this one yourself)",
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / DEMO_LAKE_MARKER).write_text("created by weir demo; `weir demo` may delete this lake\n")


def with_topic(config: WeirConfig, topic: str) -> WeirConfig:
    """``config`` reading and writing ``topic`` instead of the configured one."""
    kafka = config.sources.kafka.model_copy(update={"topic": topic})
    return config.model_copy(update={"sources": config.sources.model_copy(update={"kafka": kafka})})


def create_topic(config: WeirConfig) -> None:
    from weir.infra.kafka import create_topic as create

    kafka = config.sources.kafka
    create(kafka.bootstrap_servers, kafka.topic, kafka.partitions)


def delete_topic(config: WeirConfig) -> None:
    from weir.infra.kafka import admin_client

    kafka = config.sources.kafka
    admin = admin_client(kafka.bootstrap_servers)  # held until the futures resolve
    for future in admin.delete_topics([kafka.topic]).values():
        future.result(timeout=60)


@contextmanager
def _step(report: DemoReport, name: str) -> Iterator[Step]:
    step = Step(name, 0.0, "")
    started = time.monotonic()
    log.info("demo: %s", name)
    try:
        yield step
    finally:
        step.seconds = time.monotonic() - started
        report.steps.append(step)


def _ledger_facts(ledger_dir: Path) -> dict[str, Any]:
    """What the simulator acknowledged: coordinates, fates, quarantine reasons."""
    from weir.simulate.ledger import read_ledger

    table = read_ledger(ledger_dir).select(["partition", "offset", "fate", "reason"]).to_pylist()
    return {
        "coordinates": {(row["partition"], row["offset"]) for row in table},
        "fates": Counter(row["fate"] for row in table),
        "reasons": Counter(row["reason"] for row in table if row["fate"] == "quarantine"),
    }


def _count_by(frame, column: str) -> dict[str, int]:
    return {
        str(row[column]): int(row["count"])
        for row in frame.groupBy(column).count().orderBy(column).collect()
    }


def sample_query(table: str) -> str:
    """The query the summary runs by table name (``database.telemetry_minute``), as an analyst
    would in Athena or a notebook."""
    return (
        "SELECT layer, count(*) AS windows, sum(event_count) AS events, "
        "round(avg(temperature_c_avg), 2) AS avg_temperature_c, "
        "min(window_start) AS first_window, max(window_end) AS last_window "
        f"FROM {table} GROUP BY layer ORDER BY layer"
    )


def answer_sample_query(spark: SparkSession, config: WeirConfig, unified: DataFrame) -> list:
    """The sample query's rows, by name when this session's catalog holds the table.

    With ``catalog.kind: glue`` seen from a local session, the names live in Glue, not in
    Spark's metastore (Athena or ``weir query --engine trino`` read them there): the same query
    then runs on the table's files, through a temporary view.
    """
    name = f"{config.catalog.database}.telemetry_minute"
    if spark.catalog.tableExists(name):
        return spark.sql(sample_query(name)).collect()
    unified.createOrReplaceTempView("telemetry_minute")
    return spark.sql(sample_query("telemetry_minute")).collect()


def run_demo(spark: SparkSession, config: WeirConfig, options: DemoOptions) -> DemoReport:
    """Run the whole flow; raises WeirError (after cleaning up) when an invariant breaks."""
    from weir import infra

    started = time.monotonic()
    report = DemoReport()
    lake = LakeLayout.from_config(config)
    prepare_demo_lake(lake)  # ConfigError before anything else is touched

    with _step(report, "infra up") as step:
        reports = infra.up(config)
        report.infra_started = [r.name for r in reports if r.started]
        step.detail = ", ".join(
            f"{r.name} {'started' if r.started else 'already running'} at {r.endpoint}"
            for r in reports
        )
    try:
        _run_flow(spark, config, options, lake, report)
    finally:
        if not options.keep:
            _clean_up(config, report)
    report.seconds = time.monotonic() - started
    failed = [name for name, ok in report.checks.items() if not ok]
    if failed:
        raise WeirError(f"weir demo: invariants broken: {'; '.join(failed)}")
    return report


def _clean_up(config: WeirConfig, report: DemoReport) -> None:
    from weir import infra

    if report.topic:
        try:
            delete_topic(with_topic(config, report.topic))
        except Exception as error:  # the broker may be the thing that failed
            log.warning("could not delete demo topic %s: %s", report.topic, error)
    if report.infra_started:
        stopped = infra.down(config, only=report.infra_started)
        report.infra_stopped = [name for name, pid in stopped if pid is not None]


def _run_flow(
    spark: SparkSession,
    config: WeirConfig,
    options: DemoOptions,
    lake: LakeLayout,
    report: DemoReport,
) -> None:
    from weir.layers.batch import RebuildRequest, rebuild_batch
    from weir.layers.streaming import run_stream
    from weir.quality import run_checks
    from weir.serving import run_merge
    from weir.simulate.run import SimulateOptions, run_simulation

    now = utc_now().replace(microsecond=0)
    report.topic = f"{config.sources.kafka.topic}-demo-{now:%Y%m%dT%H%M%S}"
    config = with_topic(config, report.topic)
    create_topic(config)

    with _step(report, "simulate") as step:
        sent = run_simulation(
            config,
            SimulateOptions(
                devices=options.devices,
                rate=0,  # as fast as possible; the history ends at the wall clock
                count=options.readings,
                sink="kafka",
                seed=options.seed,
                start=now - timedelta(minutes=options.minutes),
                interval_s=options.interval_s,
            ),
        )
        report.ledger_dir = str(sent.ledger_dir)
        produced_at = utc_now()
        step.detail = (
            f"{sent.acknowledged:,} records acknowledged by Kafka topic {report.topic} "
            f"({sent.events_per_second:,.0f}/s), {sent.failed} failed"
        )
    if sent.status != "completed":
        raise WeirError(f"simulator run {sent.run_id} ended {sent.status}; see its ledger")

    with _step(report, "stream --available-now") as step:
        streamed = run_stream(spark, config, DEMO_SOURCE, available_now=True)
        step.detail = ", ".join(f"{q} to batch {b}" for q, b in streamed.last_batch.items())

    with _step(report, "batch rebuild") as step:
        # The cutoff follows the stream, so every archived record is before it.
        cutoff = utc_now().replace(microsecond=0)
        batch_run = rebuild_batch(spark, config, RebuildRequest(cutoff=cutoff))
        report.horizon = batch_run.horizon.isoformat()
        step.detail = (
            f"cutoff {cutoff.isoformat()}, horizon H {batch_run.horizon.isoformat()}, "
            f"{batch_run.windows_written:,} windows"
        )

    with _step(report, "data-quality checks of the batch run") as step:
        checked = run_checks(spark, config, BATCH_RUN_SUITES)
        _note_checks(report, checked)
        step.detail = _checks_line(checked)

    with _step(report, "merge") as step:
        merged = run_merge(spark, config)
        report.freshness_seconds = (utc_now() - produced_at).total_seconds()
        step.detail = f"{merged.scope}, telemetry_minute version {merged.serving_version}"

    with _step(report, "data-quality checks of the published tables") as step:
        checked = run_checks(spark, config, PUBLISHED_SUITES)
        _note_checks(report, checked)
        step.detail = _checks_line(checked)

    with _step(report, "catalog sync") as step:
        from weir.catalog import sync_catalog

        report.catalog_tables = sync_catalog(spark, config)
        step.detail = ", ".join(report.catalog_tables)

    with _step(report, "summary") as step:
        _summarize(spark, config, lake, report, Path(report.ledger_dir))
        step.detail = f"{sum(report.checks.values())}/{len(report.checks)} checks hold"


# The checks of the data the batch run read and wrote go before the merge (its gate reads
# them); the checks of what the merge published go after it.
BATCH_RUN_SUITES = ("raw", "quarantine", "batch", "batch_run", "agreement")
PUBLISHED_SUITES = ("unified", "speed")


def _note_checks(report: DemoReport, checked: Any) -> None:
    from weir.quality.run import describe

    failed = checked.critical_failures
    warnings = checked.warnings
    counts = report.dq_counts
    counts["passed"] = counts.get("passed", 0) + len(checked.outcomes) - len(failed) - len(warnings)
    counts["critical failed"] = counts.get("critical failed", 0) + len(failed)
    counts["warnings"] = counts.get("warnings", 0) + len(warnings)
    report.dq_failed.extend(describe(outcome) for outcome in failed)
    if checked.agreement is not None:
        report.dq_agreement = checked.agreement
    report.dq_docs = checked.docs_index


def _checks_line(checked: Any) -> str:
    failed = len(checked.critical_failures)
    return (
        f"{len(checked.outcomes)} expectations, {failed} critical failed, "
        f"{len(checked.warnings)} warning(s) ({', '.join(checked.suites)})"
    )


def _summarize(
    spark: SparkSession,
    config: WeirConfig,
    lake: LakeLayout,
    report: DemoReport,
    ledger_dir: Path,
) -> None:
    from weir.speed_table import read_speed

    def table(path: str):
        return spark.read.format("delta").load(path)

    raw = table(lake.raw).where(F.col("source_stream") == report.topic)
    quarantine = table(lake.quarantine)
    unified = table(lake.serving)
    report.zones = {
        "raw": raw.count(),
        "quarantine": quarantine.count(),
        "speed": read_speed(spark, lake.speed).count(),
        "batch": table(lake.batch).count(),
        "telemetry_minute": unified.count(),
    }
    report.quarantine_by_reason = _count_by(quarantine, "reason")
    report.unified_by_layer = {
        row["layer"]: {"windows": int(row["windows"]), "events": int(row["events"] or 0)}
        for row in unified.groupBy("layer")
        .agg(F.count(F.lit(1)).alias("windows"), F.sum("event_count").alias("events"))
        .collect()
    }
    report.sample_query = sample_query(f"{config.catalog.database}.telemetry_minute")
    report.sample_rows = [row.asDict() for row in answer_sample_query(spark, config, unified)]

    ledger = _ledger_facts(ledger_dir)
    archived = {
        (row["source_partition"], row["source_offset"])
        for row in raw.select("source_partition", "source_offset").collect()
    }
    valid = report.zones["raw"] - report.zones["quarantine"]
    unified_events = sum(layer["events"] for layer in report.unified_by_layer.values())
    first_copies = ledger["fates"]["valid"]
    report.checks = {
        "raw holds every acknowledged record exactly once": (
            archived == ledger["coordinates"] and report.zones["raw"] == len(archived)
        ),
        "raw = valid + quarantine": valid + report.zones["quarantine"] == report.zones["raw"],
        "quarantine reasons equal the ledger's": (
            Counter(report.quarantine_by_reason) == ledger["reasons"]
        ),
        "telemetry_minute counts each valid event once": unified_events == first_copies,
        "both layers serve (batch up to H, speed beyond)": set(report.unified_by_layer)
        == {"batch", "speed"},
        "every critical data-quality check passes": bool(report.dq_counts)
        and report.dq_counts.get("critical failed", 0) == 0,
    }
