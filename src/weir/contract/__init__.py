"""The event contract (docs/contract.md) as pure DataFrame transforms shared by every layer.

    raw.transform(classify_records)       -> typed fields + quarantine_reason
    classified.transform(valid_events)    -> EVENT_SCHEMA rows
    classified.transform(quarantine_rows) -> QUARANTINE_SCHEMA rows
    events.transform(dedup_first_received)
    aggregate_minutes(deduped, layer, computed_at) -> MINUTE_SCHEMA rows

The numbers and names the transforms apply (bounds, patterns, reasons) are in
:mod:`weir.contract.rules`.
"""

from weir.contract.aggregate import aggregate_minutes
from weir.contract.dedup import dedup_first_received
from weir.contract.parse import REASON_COLUMN, classify_records, quarantine_rows, valid_events

__all__ = [
    "REASON_COLUMN",
    "aggregate_minutes",
    "classify_records",
    "dedup_first_received",
    "quarantine_rows",
    "valid_events",
]
