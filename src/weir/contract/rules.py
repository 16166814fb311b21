"""The event contract v1 as data: field order, bounds, patterns and quarantine reasons.

This is the one place these numbers and names live (docs/contract.md).
The Spark transforms and the tests import them; nothing else restates them.
"""

from __future__ import annotations

from weir.schemas import METRIC_FIELDS

CONTRACT_VERSION = 1

# The contract's fields in the order docs/contract.md lists them. Reasons that name a field
# (missing_field, bad_type, out_of_range) are checked field by field in this order.
REQUIRED_FIELDS: tuple[str, ...] = ("event_id", "device_id", "event_time")
STRING_FIELDS: tuple[str, ...] = ("event_id", "device_id", "status")
INTEGER_FIELDS: tuple[str, ...] = ("schema_version",)
# The metric fields are the event schema's (weir.schemas), in the contract's order.
# Fields whose JSON type is checked (a string where a number belongs is bad_type).
TYPED_FIELDS: tuple[str, ...] = INTEGER_FIELDS + METRIC_FIELDS

# Inclusive bounds: a value exactly on a bound is valid.
METRIC_BOUNDS: dict[str, tuple[float, float]] = {
    "temperature_c": (-60.0, 150.0),
    "humidity_pct": (0.0, 100.0),
    "battery_pct": (0.0, 100.0),
    "speed_kmh": (0.0, 400.0),
    "lat": (-90.0, 90.0),
    "lon": (-180.0, 180.0),
}

DEFAULT_SCHEMA_VERSION = 1

# The contract gives the device id pattern with `$`; in Java regex `$` also matches before a
# trailing newline, so the Spark side anchors with `\z` (absolute end of input).
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
DEVICE_ID_JAVA_REGEX = DEVICE_ID_PATTERN[:-1] + r"\z"

# event_time: ISO-8601 with date, time to the second, optional fraction (up to 9 digits,
# kept to the microsecond) and a mandatory `Z` or numeric offset; or epoch milliseconds
# (a JSON integer, or a string of digits) from 0 to the end of year 9999.
ISO_TIMESTAMP_JAVA_REGEX = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})\z"
EPOCH_MILLIS_JAVA_REGEX = r"^\d{1,15}\z"
MAX_EPOCH_MILLIS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

# Bounds on a payload's JSON (docs/contract.md, "malformed_json"): deeper nesting, or a longer
# number token (its characters: sign, digits, point, exponent), makes the record malformed.
# Depth is Jackson's own guard against unbounded recursion; the number bound keeps one record
# from stalling a stream: Jackson turns a long integer into an id's text in time quadratic in
# its length (a 1,000,000-digit id takes half a minute).
MAX_NESTING_DEPTH = 1000
MAX_NUMBER_LENGTH = 10_000

# An event is from the future when event_time > ingest_time + this tolerance.
FUTURE_TOLERANCE_MINUTES = 5

# The allowed lateness of the serving rule (docs/contract.md): the batch horizon's offset and the
# speed layer's watermark.
DEFAULT_ALLOWED_LATENESS_MINUTES = 10

WINDOW_DURATION = "1 minute"


class Reason:
    """Quarantine reasons, in the order they are checked (the first that applies wins)."""

    MALFORMED_JSON = "malformed_json"
    BAD_DEVICE_ID = "bad_device_id"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_EVENT = "future_event"

    @staticmethod
    def missing_field(name: str) -> str:
        return f"missing_field:{name}"

    @staticmethod
    def bad_type(name: str) -> str:
        return f"bad_type:{name}"

    @staticmethod
    def out_of_range(name: str) -> str:
        return f"out_of_range:{name}"


def all_reasons() -> tuple[str, ...]:
    """Every reason a quarantine row can carry, in check order."""
    return (
        Reason.MALFORMED_JSON,
        *tuple(Reason.missing_field(f) for f in REQUIRED_FIELDS),
        Reason.BAD_DEVICE_ID,
        *tuple(Reason.bad_type(f) for f in TYPED_FIELDS),
        Reason.BAD_TIMESTAMP,
        Reason.FUTURE_EVENT,
        *tuple(Reason.out_of_range(f) for f in METRIC_FIELDS),
    )
