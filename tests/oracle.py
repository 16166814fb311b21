"""A plain-Python oracle of the event contract, written from docs/contract.md alone.

It shares no code with ``weir.contract`` (stdlib only, and it restates the contract's numbers on
purpose): the agreement tests run both on the same corpus, so a rule misread on one side shows up
as a disagreement instead of being copied into the expected values.

* ``classify(payload, ingest_time)`` -> ``(event, None)`` for a valid event or ``(None, reason)``.
* ``dedup_first_received(events)`` -> the first received copy of each event_id, with
  ``received_copies`` and ``distinct_contents``.
* ``aggregate_minutes(events)`` -> one dict per device and minute (MINUTE_SCHEMA without
  ``layer`` and ``computed_at``, which the caller supplies).

* ``classify_bytes(data, ingest_time)``: the same for a record's bytes, which must be UTF-8.

Known gap (kept out of the random corpora, see tests/contract/test_oracle_agreement.py): a JSON
fraction or exponent used as an id is rendered with Python's shortest digits in Java's layout,
which older JDKs do not always produce.
"""

from __future__ import annotations

import json
import math
import re
import sys
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Optional

# --- The contract's numbers, restated from docs/contract.md --------------------------------------
REQUIRED = ("event_id", "device_id", "event_time")
METRICS = ("temperature_c", "humidity_pct", "battery_pct", "speed_kmh", "lat", "lon")
BOUNDS = {
    "temperature_c": (-60.0, 150.0),
    "humidity_pct": (0.0, 100.0),
    "battery_pct": (0.0, 100.0),
    "speed_kmh": (0.0, 400.0),
    "lat": (-90.0, 90.0),
    "lon": (-180.0, 180.0),
}
CONTENT = ("device_id", "event_time", "schema_version", *METRICS, "status")
INT32 = (-(2**31), 2**31 - 1)
MAX_EPOCH_MILLIS = 253402300799999
MAX_OFFSET_MINUTES = 18 * 60
FUTURE_TOLERANCE_MICROS = 5 * 60 * 1_000_000
MAX_NESTING_DEPTH = 1000  # objects and arrays, the record's object being level 1
MAX_NUMBER_LENGTH = 10_000  # characters of one number token

# Python's re: `[0-9]` rather than `\d` (which matches any Unicode digit) and fullmatch rather
# than `$` (which matches before a trailing newline).
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
EPOCH_MILLIS = re.compile(r"[0-9]{1,15}")
ISO_INSTANT = re.compile(
    r"(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})"
    r"T(?P<h>[0-9]{2}):(?P<mi>[0-9]{2}):(?P<s>[0-9]{2})"
    r"(?:\.(?P<frac>[0-9]{1,9}))?"
    r"(?:(?P<z>Z)|(?P<sign>[+-])(?P<oh>[0-9]{2}):?(?P<om>[0-9]{2}))"
)

_EPOCH_DAY = date(1970, 1, 1).toordinal()
_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class _MalformedJsonError(ValueError):
    pass


def _reject_constant(token: str) -> Any:
    raise _MalformedJsonError(f"non-standard JSON token {token}")


def _bounded(token: str) -> str:
    if len(token) > MAX_NUMBER_LENGTH:
        raise _MalformedJsonError(f"a number of {len(token)} characters")
    return token


def _json_int(token: str) -> int:
    # Decimal, not int(token): Python refuses to convert more than 4,300 digits that way.
    return int(Decimal(_bounded(token)))


def _json_float(token: str) -> float:
    return float(_bounded(token))


def _loads(payload: str) -> Any:
    return json.loads(
        payload,
        parse_constant=_reject_constant,
        parse_int=_json_int,
        parse_float=_json_float,
    )


def parse_object(payload: Optional[str]) -> Optional[dict]:
    """The payload as a dict, or None when it is not one strict JSON object.

    json.loads already allows only space, tab, CR and LF around the value and rejects any
    other trailing text (a second value included) and a byte-order mark; duplicate keys keep
    the last occurrence (dict assignment). The contract's bounds: nesting deeper than
    MAX_NESTING_DEPTH and numbers longer than MAX_NUMBER_LENGTH characters are malformed.
    """
    if payload is None:
        return None
    try:
        try:
            value = _loads(payload)
        except RecursionError:
            # Python's stack gives out before the bound: parse again with room for it.
            limit = sys.getrecursionlimit()
            sys.setrecursionlimit(limit + 4 * MAX_NESTING_DEPTH)
            try:
                value = _loads(payload)
            finally:
                sys.setrecursionlimit(limit)
    except (ValueError, RecursionError):
        return None
    if nesting_depth_over_bound(value):
        return None
    return value if isinstance(value, dict) else None


def nesting_depth_over_bound(value: Any) -> bool:
    """Whether a parsed value nests deeper than MAX_NESTING_DEPTH (iteratively)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_NESTING_DEPTH:
                return True
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return False


def classify_bytes(data: bytes, ingest_time: datetime) -> tuple[Optional[dict], Optional[str]]:
    """``classify`` for a record's bytes: bytes that are not UTF-8 are malformed_json."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "malformed_json"
    return classify(text, ingest_time)


# --- Text of a JSON value, as Jackson writes it compactly ---------------------------------------
_JACKSON_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\f": "\\f"}
_JACKSON_SHORT_ESCAPES.update({"\n": "\\n", "\r": "\\r"})


def _jackson_string(text: str) -> str:
    out = []
    for char in text:
        if char in _JACKSON_SHORT_ESCAPES:
            out.append(_JACKSON_SHORT_ESCAPES[char])
        elif ord(char) < 0x20:
            out.append(f"\\u{ord(char):04X}")  # Jackson's hex digits are uppercase
        else:
            out.append(char)  # non-ASCII is written as is
    return '"' + "".join(out) + '"'


def _java_double(value: float) -> str:
    """Java's Double.toString layout over Python's shortest round-trip digits."""
    if value == 0.0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    sign = "-" if value < 0 else ""
    digits, exponent = _shortest_digits(abs(value))
    if 1e-3 <= abs(value) < 1e7:
        point = exponent + 1  # digits before the decimal point
        if point <= 0:
            return f"{sign}0.{'0' * -point}{digits}"
        whole = (digits + "0" * point)[:point]
        fraction = digits[point:] or "0"
        return f"{sign}{whole}.{fraction}"
    fraction = digits[1:] or "0"
    return f"{sign}{digits[0]}.{fraction}E{exponent}"


def _shortest_digits(value: float) -> tuple[str, int]:
    """(significant digits, decimal exponent of the first digit) of a positive finite float."""
    shortest = Decimal(repr(value))
    digits = "".join(map(str, shortest.as_tuple().digits)).rstrip("0") or "0"
    return digits, shortest.adjusted()


def compact_json(value: Any) -> str:
    """``value`` as compact JSON text, the way Jackson's copyCurrentStructure writes it."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return integer_text(value)
    if isinstance(value, float):
        return _java_double(value)
    if isinstance(value, str):
        return _jackson_string(value)
    if isinstance(value, list):
        return "[" + ",".join(compact_json(item) for item in value) + "]"
    return "{" + ",".join(f"{_jackson_string(k)}:{compact_json(v)}" for k, v in value.items()) + "}"


def integer_text(value: int) -> str:
    """An integer's digits, however many (str() refuses more than 4,300)."""
    return str(Decimal(value))


def text_of(value: Any) -> Optional[str]:
    """A string field's text: a JSON string's content, any other value's compact JSON text."""
    if value is None:
        return None
    return value if isinstance(value, str) else compact_json(value)


# --- Types ---------------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_double(value: Any) -> float:
    # Decimal, not float(int): an integer too large for a double becomes infinite, as in Java.
    return float(value) if isinstance(value, float) else float(Decimal(value))


def _is_int32(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and INT32[0] <= value <= INT32[1]


# --- event_time ----------------------------------------------------------------------------------
def event_time_micros(value: Any) -> Optional[int]:
    """Microseconds since the epoch for a contract timestamp, or None for a bad one.

    An integer (not a float: its text has a point or an exponent, not a boolean, object or
    array) or a string of 1-15 ASCII digits is epoch milliseconds; a string may also be ISO-8601.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    text = value if isinstance(value, str) else integer_text(value)
    if EPOCH_MILLIS.fullmatch(text):
        millis = int(text)
        return millis * 1000 if millis <= MAX_EPOCH_MILLIS else None
    return iso_micros(text) if isinstance(value, str) else None


def iso_micros(text: str) -> Optional[int]:
    match = ISO_INSTANT.fullmatch(text)
    if match is None:
        return None
    part = {k: int(v) for k, v in match.groupdict().items() if v and v.isdigit()}
    try:
        # datetime() checks that the date and time exist (no Feb 30, hour 24, second 60).
        datetime(part["y"], part["mo"], part["d"], part["h"], part["mi"], part["s"])
    except ValueError:
        return None
    offset_minutes = 0
    if match["z"] is None:
        if part["om"] > 59:
            return None
        offset_minutes = part["oh"] * 60 + part["om"]
        if offset_minutes > MAX_OFFSET_MINUTES:
            return None
        offset_minutes = -offset_minutes if match["sign"] == "-" else offset_minutes
    fraction = match["frac"] or ""
    micros_of_second = int((fraction + "000000")[:6])  # truncated, not rounded
    days = date(part["y"], part["mo"], part["d"]).toordinal() - _EPOCH_DAY
    local_seconds = days * 86400 + part["h"] * 3600 + part["mi"] * 60 + part["s"]
    instant = (local_seconds - offset_minutes * 60) * 1_000_000 + micros_of_second
    return instant if instant >= 0 else None


def to_micros(moment: datetime) -> int:
    """A datetime (naive = UTC) as microseconds since the epoch."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - _UTC_EPOCH) // timedelta(microseconds=1)


def from_micros(micros: int) -> datetime:
    return _UTC_EPOCH + timedelta(microseconds=micros)


# --- Classification ------------------------------------------------------------------------------
def classify(payload: Optional[str], ingest_time: datetime) -> tuple[Optional[dict], Optional[str]]:
    """``(event, None)`` for a valid record, ``(None, reason)`` with the first reason otherwise.

    The event has event_id, device_id, event_time (aware UTC datetime), schema_version, the six
    metrics (float or None) and status (text or None).
    """
    record = parse_object(payload)
    if record is None:
        return None, "malformed_json"

    for name in REQUIRED:
        value = record.get(name)
        if value is None or (name == "event_id" and value == ""):
            return None, f"missing_field:{name}"

    device_id = text_of(record["device_id"])
    if not DEVICE_ID.fullmatch(device_id):
        return None, "bad_device_id"

    schema_version = record.get("schema_version")
    if schema_version is not None and not _is_int32(schema_version):
        return None, "bad_type:schema_version"
    for name in METRICS:
        value = record.get(name)
        if value is not None and not _is_number(value):
            return None, f"bad_type:{name}"

    micros = event_time_micros(record["event_time"])
    if micros is None:
        return None, "bad_timestamp"
    if micros > to_micros(ingest_time) + FUTURE_TOLERANCE_MICROS:
        return None, "future_event"

    metrics = {
        name: None if record.get(name) is None else _as_double(record[name]) for name in METRICS
    }
    for name in METRICS:
        value = metrics[name]
        low, high = BOUNDS[name]
        if value is not None and not low <= value <= high:
            return None, f"out_of_range:{name}"

    event = {
        "event_id": text_of(record["event_id"]),
        "device_id": device_id,
        "event_time": from_micros(micros),
        "schema_version": 1 if schema_version is None else schema_version,
        **metrics,
        "status": text_of(record.get("status")),
    }
    return event, None


# --- Duplicates ----------------------------------------------------------------------------------
def received_order(event: dict) -> tuple:
    """Smaller = received earlier: ingest_time, then partition and offset in numeric order."""
    return (
        to_micros(event["ingest_time"]),
        len(event["source_partition"]),
        event["source_partition"],
        len(event["source_offset"]),
        event["source_offset"],
        event["source"],
    )


def dedup_first_received(events: list[dict]) -> list[dict]:
    """One event per event_id: the first received copy plus received_copies, distinct_contents.

    ``events`` are valid events with their source, source_partition, source_offset and
    ingest_time. Contents compare by value (0.0 equals -0.0, as in SQL).
    """
    copies: dict[str, list[dict]] = {}
    for event in events:
        copies.setdefault(event["event_id"], []).append(event)
    winners = []
    for same_id in copies.values():
        first = min(same_id, key=received_order)
        contents = {tuple(_content_value(copy[name]) for name in CONTENT) for copy in same_id}
        winners.append(
            {**first, "received_copies": len(same_id), "distinct_contents": len(contents)}
        )
    return winners


def _content_value(value: Any) -> Any:
    return to_micros(value) if isinstance(value, datetime) else value


# --- Per-minute views ----------------------------------------------------------------------------
def aggregate_minutes(events: list[dict]) -> list[dict]:
    """telemetry_minute rows (without layer and computed_at) for deduplicated events."""
    windows: dict[tuple[str, int], list[dict]] = {}
    minute = 60 * 1_000_000
    for event in events:
        start = to_micros(event["event_time"]) // minute * minute
        windows.setdefault((event["device_id"], start), []).append(event)

    rows = []
    for (device_id, start), members in windows.items():
        window_start = from_micros(start)

        def values(name: str, members: list[dict] = members) -> list[float]:
            return [e[name] for e in members if e[name] is not None]

        rows.append(
            {
                "device_id": device_id,
                "window_start": window_start,
                "window_end": window_start + timedelta(minutes=1),
                "event_date": window_start.date(),
                "event_count": len(members),
                "temperature_c_avg": _avg(values("temperature_c")),
                "temperature_c_min": min(values("temperature_c"), default=None),
                "temperature_c_max": max(values("temperature_c"), default=None),
                "humidity_pct_avg": _avg(values("humidity_pct")),
                "battery_pct_min": min(values("battery_pct"), default=None),
                "speed_kmh_avg": _avg(values("speed_kmh")),
                "speed_kmh_max": max(values("speed_kmh"), default=None),
                "lat_last": _latest_non_null(members, "lat"),
                "lon_last": _latest_non_null(members, "lon"),
                "status_last": _latest_non_null(members, "status"),
            }
        )
    return rows


def _avg(values: list[float]) -> Optional[float]:
    return math.fsum(values) / len(values) if values else None


def _latest_non_null(events: list[dict], name: str) -> Any:
    """The value in the latest event that has it: greatest event_time, then greatest event_id."""
    having = [e for e in events if e[name] is not None]
    if not having:
        return None
    return max(having, key=lambda e: (to_micros(e["event_time"]), e["event_id"]))[name]
