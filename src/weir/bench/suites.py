"""The registry of benchmark suites `weir bench` knows.

Every entry takes ``(spark, config, events, repeat)``; ``events`` None means the suite's own
default size (the issue's figure: 10 million for batch and dq, 2 million elsewhere; merge is
sized in days of history). Suites that need a broker start a private one on free ports.
"""

from __future__ import annotations

from typing import Callable, Optional

from pyspark.sql import SparkSession

from weir.bench import batch, contract, dq, merge, simulate, streaming, unified
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
    dq.SUITE: lambda spark, config, events, repeat: dq.run(
        spark,
        events=dq.DEFAULT_EVENTS if events is None else events,
        repeat=repeat,
        config=config,
    ),
}
