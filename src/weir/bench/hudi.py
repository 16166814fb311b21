"""`weir bench hudi`: Weir's stream beside Apache Hudi's streaming upsert on the same topic.

The Hudi job (weir.bench.hudi_job) is what an EMR user would build instead: Kafka ->
``from_json`` -> ``format("hudi")`` upsert keyed by event_id, first received wins
(precombine on minus the Kafka timestamp, EVENT_TIME_ORDERING), copy-on-write and
merge-on-read, the same trigger. It runs in a process of its own with its own Spark session
(Hudi's extensions and bundle, none of Delta's): never mixed into Weir's JVM. Weir's stream
runs through its public entry (``run_stream``), in this process, as in `weir bench streaming`.

In one run, on one private broker (docs/performance.md has the figures):

* **drain**: a backlog of ``events`` (the simulator's default fault mix) drained from scratch
  with an available-now trigger by Weir (RAW + QUARANTINE + SPEED) and by Hudi, each table
  type; Hudi's seconds are its query's (its JVM's start-up is recorded beside them, not
  counted). Target: Weir's events/s >= Hudi's.
* **bytes on disk** per million events: Hudi's table folder (data and ``.hoodie`` metadata)
  after the drain; Weir's RAW, QUARANTINE and SPEED tables.
* **freshness** at 5,000 events/s, 1 s trigger (weir.bench.streaming's measure: Kafka
  timestamp -> end of the micro-batch that made the record visible). Target: SPEED p50 <=
  Hudi's p50.
* **kill -9**: the Hudi job, live on a backlog it reads a fifth at a time, is killed (SIGKILL,
  its whole process group, the JVM too) once it has committed a micro-batch, then restarted
  to drain the rest; duplicates = rows - distinct event ids; lost = valid events in the topic
  - event ids in the table. Weir's own kill -9 shape is in tests/layers/streaming/test_run.py.

``quick`` (`weir bench --quick`), or ``live`` without a scenario: drain and bytes only (both
table types in one Hudi JVM); the figures and checks of a scenario not run are absent, and
``live_scenarios`` in the figures says which ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import yaml
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from weir.bench import streaming
from weir.bench.harness import (
    Measurement,
    SuiteResult,
    environment,
    kafka_bench_config,
    load_average,
    new_topic,
)
from weir.bench.hudi_job import (
    COPY_ON_WRITE,
    HUDI_JARS_DIR,
    MERGE_ON_READ,
    QUERY_NAME,
    STOP_FILE,
    TABLE_TYPES,
    hudi_events,
)
from weir.config import WeirConfig
from weir.errors import WeirError

SUITE = "hudi"
WEIR = "weir-stream"
SHORT = {COPY_ON_WRITE: "hudi-cow", MERGE_ON_READ: "hudi-mor"}
DEFAULT_EVENTS = 200_000
QUICK_EVENTS = 5_000
KILL_SLICES = 5  # the kill -9 run reads its backlog a fifth per micro-batch
CHILD_TIMEOUT_SECONDS = 900
FRESHNESS, KILL = "freshness", "kill_restart"
LIVE_SCENARIOS = (FRESHNESS, KILL)


def hudi_available(jars_dir: Path = HUDI_JARS_DIR) -> bool:
    return any(jars_dir.glob("hudi-spark*-bundle*.jar"))


def folder_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (0 if absent)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def per_million(size: int, events: int) -> int:
    return round(size * 1_000_000 / events) if events else 0


# --- The Hudi process ---------------------------------------------------------------------------


class HudiJob:
    """One run of ``python -m weir.bench.hudi_job`` in its own process group (so a kill -9
    takes its JVM too); its status file is read as it goes."""

    def __init__(self, mode: str, config: WeirConfig, table_types: list[str], root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.status = root / f"{mode}-status.json"
        self.status.unlink(missing_ok=True)
        conf = root / f"{mode}.yaml"
        conf.write_text(yaml.safe_dump(config.model_dump(mode="json")))
        command = [
            sys.executable,
            "-m",
            "weir.bench.hudi_job",
            mode,
            "--conf",
            str(conf),
            "--root",
            str(root),
            "--status",
            str(self.status),
            "--hudi-jars",
            str(HUDI_JARS_DIR.resolve()),
        ]
        for table_type in table_types:
            command += ["--table-type", table_type]
        self.log = root / f"{mode}.log"
        self.started = time.monotonic()
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def read_status(self) -> dict:
        try:
            return json.loads(self.status.read_text())
        except (OSError, ValueError):
            return {}

    def _failed(self) -> WeirError:
        return WeirError(
            f"the Hudi job exited with {self.process.returncode}: {self.log.read_text()[-3000:]}"
        )

    def wait_for(self, condition, what: str) -> dict:
        deadline = time.monotonic() + CHILD_TIMEOUT_SECONDS
        while True:
            status = self.read_status()
            if condition(status):
                return status
            if self.process.poll() is not None:
                status = self.read_status()
                if condition(status):
                    return status
                raise self._failed()
            if time.monotonic() > deadline:
                self.kill()
                raise WeirError(f"the Hudi job: {what} (timed out); see {self.log}")
            time.sleep(0.5)

    def finish(self) -> dict:
        status = self.wait_for(lambda s: s.get("done", False), "did not finish")
        if self.process.wait(timeout=CHILD_TIMEOUT_SECONDS) != 0:
            raise self._failed()
        return status

    def kill(self) -> None:
        """SIGKILL to the whole process group (the Python driver and its JVM)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)


def hudi_drain(config: WeirConfig, root: Path, table_types: list[str]) -> dict:
    """Drain into a table of each type, in one Hudi JVM; per type its seconds and bytes, and
    the JVM's wall time."""
    job = HudiJob("drain", config, table_types, root)
    status = job.finish()
    runs = status["runs"]
    for table_type, run in runs.items():
        run["bytes"] = folder_bytes(root / table_type / "table")
    return {"runs": runs, "process_seconds": round(time.monotonic() - job.started, 1)}


def hudi_freshness(spark: SparkSession, config: WeirConfig, root: Path, table_type: str) -> dict:
    """The Hudi job live at the 1 s trigger while the simulator produces at 5,000 events/s;
    latency per record as weir.bench.streaming measures it."""
    job = HudiJob("live", config, [table_type], root)
    failure: list[BaseException] = []
    try:
        sent = streaming._produce_while(
            spark,
            config,
            lambda: bool(job.read_status().get("started")) or _exited(job),
            failure,
        )
        job.wait_for(lambda s: s.get("read", 0) >= sent, "did not catch up")
    finally:
        (root / table_type / STOP_FILE).parent.mkdir(parents=True, exist_ok=True)
        (root / table_type / STOP_FILE).touch()
    reports = job.finish()["reports"]
    return streaming._latencies(spark, config, reports, QUERY_NAME)


def _exited(job: HudiJob) -> bool:
    if job.process.poll() is not None:
        raise job._failed()
    return False


def valid_event_ids(spark: SparkSession, config: WeirConfig) -> int:
    """Distinct event ids the Hudi job keeps from the topic (its own filter, read in batch)."""
    from weir.sources.kafka import whole_topic

    rows = whole_topic(spark, config.sources.kafka).transform(hudi_events)
    return rows.agg(F.countDistinct("event_id")).first()[0]


def hudi_kill_restart(
    spark: SparkSession, config: WeirConfig, root: Path, table_type: str, events: int
) -> dict:
    """kill -9 after the first committed micro-batch, restart to drain, count (module doc)."""
    slice_config = config.model_copy(
        update={
            "sources": config.sources.model_copy(
                update={
                    "kafka": config.sources.kafka.model_copy(
                        update={"max_offsets_per_trigger": max(events // KILL_SLICES, 1)}
                    )
                }
            )
        }
    )
    job = HudiJob("live", slice_config, [table_type], root)
    job.wait_for(lambda s: s.get("batches_with_rows", 0) >= 1, "committed no micro-batch")
    time.sleep(0.5)  # into the next micro-batch
    read_before_kill = job.read_status().get("read", 0)
    job.kill()
    hudi_drain(config, root, [table_type])
    counted = HudiJob("count", config, [table_type], root).finish()
    expected = valid_event_ids(spark, config)
    return {
        "read_before_kill": read_before_kill,
        "rows": counted["rows"],
        "event_ids": counted["events"],
        "expected_event_ids": expected,
        "duplicates": counted["rows"] - counted["events"],
        "lost": expected - counted["events"],
    }


# --- Weir's side --------------------------------------------------------------------------------


def weir_bytes(config: WeirConfig) -> dict:
    from weir.lake import LakeLayout

    lake = LakeLayout.from_config(config)
    tables = {"raw": lake.raw, "quarantine": lake.quarantine, "speed": lake.speed}
    return {name: folder_bytes(Path(path.removeprefix("file://"))) for name, path in tables.items()}


# --- The live scenarios -------------------------------------------------------------------------


def _recorded(figures: dict, key: str, name: str, measure) -> None:
    """``figures[key][name] = measure()``, or the error it raised (the drain's figures are
    kept; the check on this one is reported missed, naming the error)."""
    try:
        figures.setdefault(key, {})[name] = measure()
    except Exception as error:  # reported in the figures and the checks
        figures.setdefault(key, {})[name] = {"error": f"{type(error).__name__}: {error}"[:2000]}


def _live_scenarios(
    spark, stack, state: Path, on, events: int, figures: dict, live: tuple[str, ...]
) -> None:
    """Freshness of SPEED and of each Hudi table type; the kill -9 run of each type (those
    of them in ``live``)."""
    if FRESHNESS in live:
        _freshness_scenarios(spark, stack, state, on, figures)
    if KILL in live:
        _kill_scenarios(spark, stack, state, on, events, figures)


def _freshness_scenarios(spark, stack, state: Path, on, figures: dict) -> None:
    live = new_topic(stack, f"bench-hudi-weir-{int(time.time())}")
    _recorded(
        figures,
        FRESHNESS,
        WEIR,
        partial(streaming.weir_freshness, spark, on(live, "fresh-weir")),
    )
    for table_type in TABLE_TYPES:
        live = new_topic(stack, f"bench-{SHORT[table_type]}-{int(time.time())}")
        _recorded(
            figures,
            FRESHNESS,
            SHORT[table_type],
            partial(
                hudi_freshness,
                spark,
                on(live, f"fresh-{table_type}"),
                state / f"fresh-{table_type}",
                table_type,
            ),
        )


def _kill_scenarios(spark, stack, state: Path, on, events: int, figures: dict) -> None:
    for table_type in TABLE_TYPES:
        killed = new_topic(stack, f"bench-kill-{SHORT[table_type]}-{int(time.time())}")
        killed_config = on(killed, f"kill-{table_type}")
        sent = streaming._backlog(killed_config, events)
        _recorded(
            figures,
            KILL,
            SHORT[table_type],
            partial(
                hudi_kill_restart,
                spark,
                killed_config,
                state / f"kill-{table_type}",
                table_type,
                sent,
            ),
        )


# --- The suite ----------------------------------------------------------------------------------


def run(
    spark: SparkSession,
    *,
    events: int = DEFAULT_EVENTS,
    repeat: int = 1,
    config: WeirConfig,
    quick: bool = False,
    live: tuple[str, ...] = LIVE_SCENARIOS,
) -> SuiteResult:
    """Drain and bytes (best of ``repeat``, taking turns); then the ``live`` scenarios (none
    when ``quick``): freshness of SPEED and of each Hudi table type, the kill -9 run of each
    type."""
    from weir.infra import private_stack

    if not hudi_available():
        raise WeirError(f"no Hudi bundle in {HUDI_JARS_DIR}; run `make bench-deps`")
    result = SuiteResult(suite=SUITE)
    live = () if quick else live
    figures: dict = {"load_average_before": load_average(), "live_scenarios": list(live)}
    spark.conf.set("spark.sql.streaming.numRecentProgressUpdates", "100000")
    with tempfile.TemporaryDirectory(prefix="weir-bench-hudi-") as folder:
        state = Path(folder)
        with private_stack(config, state / "stack") as stack:

            def on(topic: str, name: str) -> WeirConfig:
                return kafka_bench_config(stack, state / name, topic, streaming.TRIGGER_SECONDS)

            topic = new_topic(stack, f"bench-hudi-drain-{int(time.time())}")
            produced = streaming._backlog(on(topic, "backlog"), events)
            weir_seconds: list[float] = []
            hudi_runs: dict[str, list[dict]] = {t: [] for t in TABLE_TYPES}
            for attempt in range(repeat):
                weir_config = on(topic, f"weir-{attempt}")
                weir_seconds.append(
                    streaming._timed(partial(streaming.drain_weir, spark, weir_config))
                )
                figures.setdefault("weir_bytes", weir_bytes(weir_config))
                # The first table type of a Hudi JVM runs cold: with --repeat 2 or more the
                # order alternates, so each type has a warm run to be the best of.
                order = list(TABLE_TYPES) if attempt % 2 == 0 else list(reversed(TABLE_TYPES))
                drained = hudi_drain(on(topic, "h"), state / f"hudi-{attempt}", order)
                figures.setdefault("hudi_process_seconds", []).append(drained["process_seconds"])
                for table_type, run_figures in drained["runs"].items():
                    hudi_runs[table_type].append(run_figures)
                    shutil.rmtree(state / f"hudi-{attempt}" / table_type, ignore_errors=True)
            result.measurements = [Measurement(WEIR, produced, min(weir_seconds))]
            figures["bytes_per_million_events"] = {
                "weir": {
                    name: per_million(size, produced)
                    for name, size in figures["weir_bytes"].items()
                }
            }
            figures["bytes_per_million_events"]["weir"]["total"] = per_million(
                sum(figures["weir_bytes"].values()), produced
            )
            for table_type, runs in hudi_runs.items():
                best = min(runs, key=lambda r: r["seconds"])
                result.measurements.append(
                    Measurement(SHORT[table_type], produced, round(best["seconds"], 3))
                )
                figures["bytes_per_million_events"][SHORT[table_type]] = per_million(
                    runs[0]["bytes"], produced
                )
            _live_scenarios(spark, stack, state, on, events, figures, live)
    figures["load_average_after"] = load_average()
    result.environment = environment(
        master=spark.sparkContext.master,
        partitions=config.sources.kafka.partitions,
        trigger_s=streaming.TRIGGER_SECONDS,
        hudi_bundle=sorted(p.name for p in HUDI_JARS_DIR.glob("*.jar")),
        first_received_wins="precombine receive_rank = -(Kafka timestamp, µs); "
        "hoodie.record.merge.mode=EVENT_TIME_ORDERING",
        **figures,
    )
    result.checks.extend(hudi_checks(result, figures))
    return result


def hudi_checks(result: SuiteResult, figures: dict) -> list[dict]:
    """The issue's targets: Weir's drain >= Hudi's (each type); where measured, SPEED p50 <=
    Hudi's p50 and 0 duplicates after kill -9 (each type)."""
    weir = result.measurement(WEIR).events_per_second
    checks = []
    for name in SHORT.values():
        hudi = result.measurement(name).events_per_second
        checks.append(
            {
                "check": f"{WEIR} drain >= {name} drain (events/s)",
                "value": round(weir / hudi, 3),
                "met": weir >= hudi,
            }
        )
    for name in SHORT.values():
        if FRESHNESS in figures:
            speed, hudi = figures[FRESHNESS][WEIR], figures[FRESHNESS][name]
            measured = "p50_s" in speed and "p50_s" in hudi
            checks.append(
                {
                    "check": f"SPEED freshness p50 <= {name} p50 at {streaming.FRESHNESS_RATE}/s",
                    "value": speed.get("p50_s", speed.get("error")),
                    "baseline": hudi.get("p50_s", hudi.get("error")),
                    "met": measured and speed["p50_s"] <= hudi["p50_s"],
                }
            )
        if KILL in figures:
            killed = figures[KILL][name]
            checks.append(
                {
                    "check": f"{name}: 0 duplicates after kill -9 and restart",
                    "value": killed.get("duplicates", killed.get("error")),
                    "met": killed.get("duplicates") == 0,
                }
            )
    return checks
