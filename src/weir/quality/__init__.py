"""Data quality (DESIGN §9): Great Expectations suites over the Weir tables, ``dq/results``,
Data Docs and the merge gate. docs/quality.md says what is checked and why it is shaped so.

    run_checks(spark, config, suites)      -> CheckReport (rows appended, Data Docs published)
    require_passed(report)                 -> ChecksFailedError (exit 3) on a critical failure
    run_dq(spark, config, suites, every)   -> the command: once, or every N seconds until SIGTERM
    gate_decision(spark, config, run_id)   -> GateDecision: may the merge publish this batch run?

Modules, one concern each: ``metrics`` (pure transforms), ``suites`` (the expectations, from
config), ``tables`` (pinned snapshots), ``validate`` (the GX run), ``results`` (dq/results),
``docs`` (publishing Data Docs), ``gate`` and ``run``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Exported lazily: the gate (imported by the merge) must not pull Great Expectations in.
_EXPORTS = {
    "GATED_SUITES": "weir.quality.catalogue",
    "SUITES": "weir.quality.catalogue",
    "CheckOutcome": "weir.quality.outcomes",
    "CheckReport": "weir.quality.run",
    "GateDecision": "weir.quality.gate",
    "gate_decision": "weir.quality.gate",
    "require_passed": "weir.quality.run",
    "run_checks": "weir.quality.run",
    "run_dq": "weir.quality.run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'weir.quality' has no attribute {name!r}")
