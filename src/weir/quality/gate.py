"""The merge gate (DESIGN §9): may the merge publish a batch run?

The merge asks before it publishes the horizon of a batch run. The answer comes from
``dq/results``: the latest result of every expectation recorded for that batch run in the
gated suites (``weir.quality.suites.GATED_SUITES``: the data the batch run read and wrote),
and ``dq.gate``:

* ``block`` - refuse a batch run a critical check failed for: the merge keeps serving the
  previous state (docs/quality.md, "The gate"). A run not checked yet is published, and the
  merge says so: schedule the checks between the batch run and the merge (the shipped DAG
  does) for every run to be judged before it is served;
* ``warn`` - publish; the failures (or the missing checks) are reported;
* ``off`` - publish without reading anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession

from weir.config import WeirConfig
from weir.lake import LakeLayout
from weir.quality.catalogue import GATED_SUITES
from weir.quality.outcomes import CheckOutcome
from weir.quality.results import latest_results

BLOCK = "block"
WARN = "warn"
OFF = "off"


@dataclass(frozen=True)
class GateDecision:
    """Whether the merge may publish batch run ``batch_run_id``, and why."""

    publish: bool
    mode: str
    batch_run_id: str
    checked: bool  # the gated suites have results for this batch run
    failed: tuple[CheckOutcome, ...]  # critical checks that failed (latest result of each)

    @property
    def reason(self) -> str:
        """One line for the merge's log and its run record."""
        if self.mode == OFF:
            return "dq.gate is off"
        if not self.checked:
            return (
                f"batch run {self.batch_run_id} has no data-quality results yet: published "
                "(run `weir dq run` before the merge to gate it)"
            )
        if not self.failed:
            return f"batch run {self.batch_run_id} passed its critical checks"
        names = "; ".join(f"{o.suite} {o.table_name} {o.expectation}" for o in self.failed)
        verdict = "published anyway (dq.gate: warn)" if self.publish else "not published"
        return (
            f"batch run {self.batch_run_id} failed {len(self.failed)} critical check(s): "
            f"{names}: {verdict}"
        )


def gate_decision(spark: SparkSession, config: WeirConfig, run_id: str) -> GateDecision:
    """The gate's answer for batch run ``run_id`` (module doc). Reads ``dq/results`` only
    (nothing when ``dq.gate`` is off); writes nothing."""
    mode = config.dq.gate
    if mode == OFF:
        return GateDecision(True, mode, run_id, checked=False, failed=())
    latest = latest_results(spark, LakeLayout.from_config(config), run_id, GATED_SUITES)
    failed = tuple(outcome for outcome in latest if outcome.critical_failure)
    checked = bool(latest)
    publish = mode == WARN or not failed
    return GateDecision(publish, mode, run_id, checked=checked, failed=failed)
