"""Benchmark harness: measure a candidate against a baseline in the same run, on the same data.

Figures go to ``bench/results/<suite>-<UTC time>.json`` and ``bench/results/<suite>-latest.json``
so a note, a notebook or CI can read them. A target is a ratio to the in-run baseline and/or an
absolute rate; a miss is reported (and makes `weir bench` exit 1), never hidden.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from weir.config import WeirConfig, config_from_mapping
from weir.errors import WeirError

RESULTS_DIR = Path("bench/results")


@dataclass
class Measurement:
    name: str
    events: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class Target:
    """``candidate`` must reach ``min_ratio`` x ``baseline`` and/or ``min_rate`` events/s."""

    candidate: str
    baseline: Optional[str] = None
    min_ratio: Optional[float] = None
    min_rate: Optional[float] = None


@dataclass
class SuiteResult:
    suite: str
    measurements: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    environment: dict = field(default_factory=dict)

    def measurement(self, name: str) -> Measurement:
        return next(m for m in self.measurements if m.name == name)

    @property
    def passed(self) -> bool:
        return all(check["met"] for check in self.checks)

    def evaluate(self, targets: list) -> None:
        for target in targets:
            candidate = self.measurement(target.candidate)
            if target.baseline and target.min_ratio is not None:
                baseline = self.measurement(target.baseline)
                ratio = candidate.events_per_second / baseline.events_per_second
                self.checks.append(
                    {
                        "check": f"{target.candidate} / {target.baseline} >= {target.min_ratio}",
                        "value": round(ratio, 3),
                        "met": ratio >= target.min_ratio,
                    }
                )
            if target.min_rate is not None:
                rate = candidate.events_per_second
                self.checks.append(
                    {
                        "check": f"{target.candidate} >= {target.min_rate:,.0f} events/s",
                        "value": round(rate),
                        "met": rate >= target.min_rate,
                    }
                )

    def write(self, results_dir: Path = RESULTS_DIR) -> Path:
        results_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        document = {
            "suite": self.suite,
            "at": stamp,
            "environment": self.environment,
            "measurements": [
                {**asdict(m), "events_per_second": round(m.events_per_second)}
                for m in self.measurements
            ],
            "checks": self.checks,
            "passed": self.passed,
        }
        path = results_dir / f"{self.suite}-{stamp}.json"
        text = json.dumps(document, indent=2)
        path.write_text(text)
        (results_dir / f"{self.suite}-latest.json").write_text(text)
        return path


def load_average() -> Optional[list[float]]:
    """The 1/5/15-minute load averages, rounded (None where the platform has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def kafka_bench_config(
    stack: WeirConfig, lake_root: Path, topic: str, trigger_s: Optional[int] = None
) -> WeirConfig:
    """``stack``'s config with its own lake under ``lake_root``, reading ``topic`` (and a
    trigger interval of ``trigger_s`` seconds when given)."""
    document = stack.model_dump()
    document["lake"] = {"root": f"file://{lake_root}", "landing": None}
    document["sources"]["kafka"]["topic"] = topic
    if trigger_s is not None:
        document["timing"]["trigger_interval_seconds"] = trigger_s
    return config_from_mapping(document, environ={})


def new_topic(stack: WeirConfig, name: str) -> str:
    """A fresh topic ``name`` on ``stack``'s broker, with its configured partitions."""
    from weir.infra.kafka import create_topic

    kafka = stack.sources.kafka
    return create_topic(kafka.bootstrap_servers, name, kafka.partitions)


def environment(**extra: object) -> dict:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        **extra,
    }


def timed(name: str, events: int, action: Callable[[], object], repeat: int = 1) -> Measurement:
    """Best of ``repeat`` runs of ``action`` (warm JVM: the first run is usually slowest)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return Measurement(name=name, events=events, seconds=best)


def _simulate_and_report(config: WeirConfig, options: object, results: object) -> None:
    from weir.simulate.run import run_simulation

    results.put(run_simulation(config, options))  # type: ignore[attr-defined]


def simulate_in_own_process(config: WeirConfig, options: object) -> object:
    """``run_simulation(config, options)`` in a child process; returns its RunResult.

    The live benchmarks' producer stands for devices elsewhere: in the driver's interpreter
    it would hold the GIL against the foreachBatch callbacks it is measuring, and the
    freshness measured would be the producer's as much as the stream's. A fresh interpreter
    (``spawn``), not a fork of one that runs a JVM gateway.
    """
    import multiprocessing
    import queue

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(
        target=_simulate_and_report, args=(config, options, results), name="weir-bench-producer"
    )
    child.start()
    try:
        while True:
            try:
                return results.get(timeout=5)
            except queue.Empty:  # is the child still there?
                if not child.is_alive():
                    raise WeirError(
                        f"the benchmark's producer process exited with {child.exitcode} "
                        "before reporting"
                    ) from None
    finally:
        child.join(timeout=60)
