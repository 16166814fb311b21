"""`weir bench chaos`: a long seeded `weir chaos` run, kept with the other figures.

Not a speed comparison. What the benchmark keeps (issue #21) is the outcome of a run long
enough for every kind of fault to hit every role several times: the kills and broker outages
survived, the records acknowledged and reconciled, and whether anything was lost or
duplicated — the one target. The CI test runs the same thing for 3 minutes
(tests/test_chaos.py); this runs ``DEFAULT_MINUTES`` (docs/operations.md, "Chaos").

``events`` and ``repeat`` of `weir bench` do not apply: the simulator's rate and the minutes
fix the records, and one run is the figure (its seed fixes the fault plan).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Optional

from weir.bench.harness import Measurement, SuiteResult, environment, load_average
from weir.chaos import KILL, OUTAGE, ChaosOptions, ChaosReport, run_chaos
from weir.config import WeirConfig

SUITE = "chaos"
DEFAULT_MINUTES = 30.0
DEFAULT_SEED = 1
NOTHING_LOST = "nothing lost or duplicated, unified = clean rebuild"


def chaos_result(
    report: ChaosReport,
    seconds: float,
    load_before: Optional[list[float]],
    load_after: Optional[list[float]],
) -> SuiteResult:
    """The suite's figures for one finished chaos run (pure): the acknowledged records over
    the run's wall time, the faults survived by kind and role, and the target met only when the
    reconciliation found no problem."""
    kills = Counter(f.target for f in report.faults if f.kind == KILL)
    outages = [f for f in report.faults if f.kind == OUTAGE]
    result = SuiteResult(
        SUITE,
        environment=environment(
            seed=report.seed,
            minutes=report.minutes,
            kills=sum(kills.values()),
            kills_by_role=dict(sorted(kills.items())),
            outages=len(outages),
            outage_seconds=[f.detail for f in outages],
            exits=list(report.exits),
            counts={key: str(value) for key, value in report.counts.items()},
            problems=list(report.problems),
            load_before=load_before,
            load_after=load_after,
        ),
    )
    result.measurements.append(Measurement("chaos-run", report.acknowledged, round(seconds, 2)))
    result.checks.append({"check": NOTHING_LOST, "value": len(report.problems), "met": report.ok})
    return result


def run(
    config: WeirConfig,
    minutes: float = DEFAULT_MINUTES,
    seed: int = DEFAULT_SEED,
    folder: Optional[Path] = None,
) -> SuiteResult:
    """One chaos run of ``minutes`` under ``folder`` (default ``<infra.state_dir>/bench-chaos``,
    removed first), as `weir chaos` runs it; its figures."""
    where = folder or Path(config.infra.state_dir).resolve() / "bench-chaos"
    before = load_average()
    started = time.monotonic()
    report = run_chaos(config, ChaosOptions(minutes=minutes, seed=seed), where)
    seconds = time.monotonic() - started
    return chaos_result(report, seconds, before, load_average())


__all__ = ["DEFAULT_MINUTES", "SUITE", "chaos_result", "run"]
