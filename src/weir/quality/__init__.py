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

from weir.quality.gate import GateDecision, gate_decision
from weir.quality.run import CheckReport, require_passed, run_checks, run_dq
from weir.quality.suites import GATED_SUITES, SUITES
from weir.quality.validate import CheckOutcome

__all__ = [
    "GATED_SUITES",
    "SUITES",
    "CheckOutcome",
    "CheckReport",
    "GateDecision",
    "gate_decision",
    "require_passed",
    "run_checks",
    "run_dq",
]
