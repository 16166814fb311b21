"""The registry of benchmark suites `weir bench` knows."""

from __future__ import annotations

from typing import Callable

from weir.bench import batch, contract

SUITES: dict[str, Callable] = {
    contract.SUITE: contract.run,
    batch.SUITE: batch.run,
}
