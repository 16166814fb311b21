"""The event contract (DESIGN.md §3-§5) as pure DataFrame transforms shared by every layer.

    raw.transform(classify_records)       -> typed fields + quarantine_reason
    classified.transform(valid_events)    -> EVENT_SCHEMA rows
    classified.transform(quarantine_rows) -> QUARANTINE_SCHEMA rows
    events.transform(dedup_first_received)
    aggregate_minutes(deduped, layer, computed_at) -> MINUTE_SCHEMA rows

The transforms are exported lazily: ``weir.schemas`` imports ``weir.contract.rules``, and an
eager import here would make ``import weir.schemas`` circular.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "REASON_COLUMN": "weir.contract.parse",
    "classify_records": "weir.contract.parse",
    "quarantine_rows": "weir.contract.parse",
    "valid_events": "weir.contract.parse",
    "dedup_first_received": "weir.contract.dedup",
    "aggregate_minutes": "weir.contract.aggregate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'weir.contract' has no attribute {name!r}")
