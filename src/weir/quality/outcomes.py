"""What one check run produced, per expectation: the shape of a ``dq/results`` row.

Free of Great Expectations on purpose: the merge's gate reads results without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

CRITICAL = "critical"


@dataclass(frozen=True)
class CheckOutcome:
    """One expectation's result: one ``dq/results`` row (with the run's id and time)."""

    suite: str
    table_name: str
    table_version: Optional[int]
    expectation: str
    severity: str
    success: bool
    observed_value: Optional[str]
    threshold: Optional[str]

    @property
    def critical_failure(self) -> bool:
        return not self.success and self.severity == CRITICAL
