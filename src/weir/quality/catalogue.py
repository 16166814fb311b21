"""The suites of `weir dq run --suite NAME`, and which of them the merge gate reads.

Free of Great Expectations on purpose: the merge's gate imports it.
"""

from __future__ import annotations

from collections.abc import Sequence

# --- The Weir suites (`weir dq run --suite NAME`) --------------------------------------------
RAW = "raw"
QUARANTINE = "quarantine"
SPEED = "speed"
BATCH = "batch"
UNIFIED = "unified"
BATCH_RUN = "batch_run"  # the latest batch run's input: reconciliation, ratios
AGREEMENT = "agreement"  # batch vs speed, per day
SUITES: tuple[str, ...] = (RAW, QUARANTINE, SPEED, BATCH, UNIFIED, BATCH_RUN, AGREEMENT)
# What the merge gate reads: the checks of the data a batch run read and wrote. Not the speed
# view (not the batch run's) nor the unified table (the merge's own output: gating on its
# freshness would keep it stale for ever).
GATED_SUITES: tuple[str, ...] = (RAW, QUARANTINE, BATCH, BATCH_RUN, AGREEMENT)


def unknown_suites(names: Sequence[str]) -> list[str]:
    return [name for name in names if name not in SUITES]
