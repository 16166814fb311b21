"""The registry of benchmark suites `weir bench` knows.

Every entry takes ``(spark, config, events, repeat)``; ``events`` None means the suite's own
default size (the issue's figure: 10 million for batch and dq, 2 million elsewhere; merge is
sized in days of history). Suites that need a broker start a private one on free ports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from pyspark.sql import SparkSession

from weir.bench import (
    batch,
    chaos,
    contract,
    dq,
    hudi,
    merge,
    plain_batch,
    simulate,
    streaming,
    unified,
)
from weir.bench.harness import SuiteResult
from weir.config import WeirConfig

Suite = Callable[[SparkSession, WeirConfig, Optional[int], int], SuiteResult]
DEFAULT_EVENTS = 2_000_000


def _sized(events: Optional[int]) -> int:
    return DEFAULT_EVENTS if events is None else events


SUITES: dict[str, Suite] = {
    contract.SUITE: lambda spark, config, events, repeat: contract.run(
        spark, events=_sized(events), repeat=repeat
    ),
    batch.SUITE: lambda spark, config, events, repeat: batch.run(
        spark,
        events=batch.DEFAULT_EVENTS if events is None else events,
        repeat=repeat,
        config=config,
    ),
    simulate.SUITE: lambda spark, config, events, repeat: simulate.run(
        spark, events=_sized(events), repeat=repeat, config=config
    ),
    streaming.SUITE: lambda spark, config, events, repeat: streaming.run(
        spark, events=_sized(events), repeat=repeat, config=config
    ),
    merge.SUITE: lambda spark, config, events, repeat: merge.run(
        spark, repeat=repeat, config=config
    ),
    # A live run at a fixed rate for several merge intervals: events and repeat do not apply.
    unified.SUITE: lambda spark, config, events, repeat: unified.run(spark, config=config),
    plain_batch.SUITE: lambda spark, config, events, repeat: plain_batch.run(
        spark,
        events=plain_batch.DEFAULT_EVENTS if events is None else events,
        repeat=repeat,
        config=config,
    ),
    hudi.SUITE: lambda spark, config, events, repeat: hudi.run(
        spark,
        events=hudi.DEFAULT_EVENTS if events is None else events,
        repeat=repeat,
        config=config,
    ),
    # A seeded 30-minute `weir chaos` run in processes of its own: events and repeat do not
    # apply, nor does this session (its reconciliation builds one).
    chaos.SUITE: lambda spark, config, events, repeat: chaos.run(config),
    dq.SUITE: lambda spark, config, events, repeat: dq.run(
        spark,
        events=dq.DEFAULT_EVENTS if events is None else events,
        repeat=repeat,
        config=config,
    ),
}


# `weir bench --quick`: each scenario at toy size, once, to check the whole chain (suites,
# figures, report, plots) in about two minutes; the figures say nothing about speed. Suites
# whose shortest run is minutes (a live run for several merge intervals, 31-day rebuilds,
# generated 7- and 30-day histories, ProducerPerformance in turns) are left out and the report
# says so.
QUICK_EVENTS = 5_000
QUICK_STREAM_EVENTS = 5_000
QuickSuite = Callable[[SparkSession, WeirConfig], SuiteResult]
QUICK_SUITES: dict[str, QuickSuite] = {
    plain_batch.SUITE: lambda spark, config: plain_batch.run(
        spark, events=QUICK_EVENTS, repeat=1, config=config, warm_up=False
    ),
    contract.SUITE: lambda spark, config: contract.run(spark, events=QUICK_EVENTS, repeat=1),
    streaming.SUITE: lambda spark, config: streaming.run(
        spark,
        events=QUICK_STREAM_EVENTS,
        config=config,
        freshness=False,
        unified=False,
        memory=False,
    ),
    hudi.SUITE: lambda spark, config: hudi.run(
        spark, events=QUICK_STREAM_EVENTS, config=config, quick=True
    ),
}


def quick_suites() -> dict[str, QuickSuite]:
    """QUICK_SUITES, without Hudi's when its bundle is not resolved (`make bench-deps`)."""
    return {
        name: suite
        for name, suite in QUICK_SUITES.items()
        if name != hudi.SUITE or hudi.hudi_available()
    }


def run_quick(
    spark: SparkSession,
    config: WeirConfig,
    results_dir: Path,
    page: Path,
    report: Callable[[SuiteResult, Path], None] = lambda result, path: None,
    names: Optional[list[str]] = None,
) -> tuple[Path, Path]:
    """The quick suites (``names``, or every one available), their figures into
    ``results_dir``, then the report and ``page``."""
    from weir.bench.report import write_report

    available = quick_suites()
    for name in names if names is not None else list(available):
        suite = available[name]
        result = suite(spark, config)
        result.environment["quick"] = True
        report(result, result.write(results_dir))
    return write_report(results_dir, page)
