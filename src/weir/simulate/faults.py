"""The fault mix: which faults the simulator injects, how often, and what each one looks like.

Every fault kind has its own rate: the expected share of all records sent that carry it.
Copies (``duplicate``, ``conflict``) are extra records that repeat an earlier event's id; every
other kind turns one fleet reading into a faulty record. A record carries at most one fault.

Each quarantine fault is built so that exactly one quarantine reason applies (docs/contract.md,
"Classification"), and the first applicable one is the intended reason;
``tests/simulate/test_faults.py`` runs the payloads through ``weir.contract.classify_records``
to prove it. Reasons come from ``weir.contract.rules.Reason``; bounds and field names from the
same module.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Optional

from weir.config import ConfigError
from weir.contract.rules import (
    MAX_EPOCH_MILLIS,
    METRIC_BOUNDS,
    METRIC_FIELDS,
    REQUIRED_FIELDS,
    TYPED_FIELDS,
    Reason,
)

# --- Fault kinds ---------------------------------------------------------------------------------
NONE = "none"
# Extra records repeating an earlier event_id (received later, so they lose the dedup).
DUPLICATE = "duplicate"  # a producer retry: the same bytes again
CONFLICT = "conflict"  # the same event_id with a different reading
# Valid events that arrive out of order.
OUT_OF_ORDER = "out_of_order"  # event_time earlier than its neighbours, within allowed lateness
LATE = "late"  # event_time older than the allowed lateness (minutes to hours)
# Valid events in an unusual but legal shape.
EXTRA_FIELDS = "extra_fields"
MISSING_OPTIONAL = "missing_optional"
EPOCH_MILLIS = "epoch_millis"
# Invalid records, one per quarantine reason family (docs/contract.md).
MALFORMED_JSON = "malformed_json"
MISSING_FIELD = "missing_field"
BAD_DEVICE_ID = "bad_device_id"
BAD_TYPE = "bad_type"
BAD_TIMESTAMP = "bad_timestamp"
FUTURE_EVENT = "future_event"
OUT_OF_RANGE = "out_of_range"

COPY_KINDS: tuple[str, ...] = (DUPLICATE, CONFLICT)
VALID_KINDS: tuple[str, ...] = (OUT_OF_ORDER, LATE, EXTRA_FIELDS, MISSING_OPTIONAL, EPOCH_MILLIS)
INVALID_KINDS: tuple[str, ...] = (
    MALFORMED_JSON,
    MISSING_FIELD,
    BAD_DEVICE_ID,
    BAD_TYPE,
    BAD_TIMESTAMP,
    FUTURE_EVENT,
    OUT_OF_RANGE,
)
FAULT_KINDS: tuple[str, ...] = COPY_KINDS + VALID_KINDS + INVALID_KINDS
# Kinds that only change the event_time member (FaultInjector.event_time).
TIME_KINDS: frozenset[str] = frozenset(
    {OUT_OF_ORDER, LATE, EPOCH_MILLIS, BAD_TIMESTAMP, FUTURE_EVENT}
)

# Future events are this far ahead of the run's clock (never of the wall clock), so the reason
# is certain for any ingest within a day of sending (future: event_time > ingest + 5 min).
FUTURE_LEAD_US = 24 * 3600 * 1_000_000
FUTURE_SPREAD_US = 6 * 3600 * 1_000_000
# Late events are older than the allowed lateness by at least a minute, and at most this old.
LATE_MAX_US = 6 * 3600 * 1_000_000

PRESETS: dict[str, dict[str, float]] = {
    "none": {},
    # A plausible production day: mostly clean, ~1.3% quarantined, 0.2% conflicting copies,
    # under conf/local.yaml's dq thresholds.
    "default": {
        DUPLICATE: 0.02,
        CONFLICT: 0.002,
        OUT_OF_ORDER: 0.05,
        LATE: 0.005,
        EXTRA_FIELDS: 0.02,
        MISSING_OPTIONAL: 0.03,
        EPOCH_MILLIS: 0.05,
        MALFORMED_JSON: 0.002,
        MISSING_FIELD: 0.002,
        BAD_DEVICE_ID: 0.001,
        BAD_TYPE: 0.002,
        BAD_TIMESTAMP: 0.002,
        FUTURE_EVENT: 0.001,
        OUT_OF_RANGE: 0.003,
    },
    # Every fault often enough to show up in a few thousand records (tests, DQ alarms).
    "heavy": {
        DUPLICATE: 0.08,
        CONFLICT: 0.02,
        OUT_OF_ORDER: 0.12,
        LATE: 0.04,
        EXTRA_FIELDS: 0.05,
        MISSING_OPTIONAL: 0.08,
        EPOCH_MILLIS: 0.08,
        MALFORMED_JSON: 0.01,
        MISSING_FIELD: 0.015,
        BAD_DEVICE_ID: 0.01,
        BAD_TYPE: 0.02,
        BAD_TIMESTAMP: 0.015,
        FUTURE_EVENT: 0.01,
        OUT_OF_RANGE: 0.02,
    },
}
DEFAULT_PRESET = "default"
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# Records that are not copies must leave room for clean readings.
MAX_TOTAL_RATE = 0.9


@dataclass(frozen=True)
class FaultMix:
    """Rate per fault kind: the expected share of all records sent that carry that fault."""

    rates: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind, rate in self.rates.items():
            if kind not in FAULT_KINDS:
                raise ConfigError(
                    "--faults", f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}"
                )
            if not (isinstance(rate, (int, float)) and 0.0 <= rate <= 1.0):
                raise ConfigError("--faults", f"rate of {kind} must be in [0, 1], got {rate!r}")
        total = sum(self.rates.values())
        if total > MAX_TOTAL_RATE:
            raise ConfigError(
                "--faults", f"fault rates add up to {total:.3f}; at most {MAX_TOTAL_RATE} allowed"
            )
        object.__setattr__(self, "rates", {k: float(self.rates.get(k, 0.0)) for k in FAULT_KINDS})

    @classmethod
    def preset(cls, name: str) -> FaultMix:
        if name not in PRESETS:
            raise ConfigError("--fault-mix", f"unknown preset {name!r}; use {', '.join(PRESETS)}")
        return cls(PRESETS[name])

    @classmethod
    def parse(cls, preset: str = DEFAULT_PRESET, overrides: str = "") -> FaultMix:
        """A preset with ``kind=rate,kind=rate`` overrides, as the CLI takes them."""
        rates = dict(cls.preset(preset).rates)
        for item in filter(None, (part.strip() for part in overrides.split(","))):
            kind, sep, value = item.partition("=")
            kind = kind.strip()
            if not sep:
                raise ConfigError("--faults", f"{item!r} is not kind=rate")
            try:
                rates[kind] = float(value)
            except ValueError:
                raise ConfigError(
                    "--faults", f"rate of {kind} is not a number: {value!r}"
                ) from None
        return cls(rates)

    def rate(self, kind: str) -> float:
        return self.rates[kind]

    @property
    def copy_rate(self) -> float:
        return sum(self.rates[k] for k in COPY_KINDS)

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in self.rates.items() if v}


# --- Building faulty payloads --------------------------------------------------------------------
# A reading as an ordered list of [key, JSON text] pairs; serialize() gives the exact bytes a
# clean payload has (the fleet's fast templates are built from the same layout).
Fields = list


def serialize(fields: Fields) -> str:
    return "{" + ",".join([f'"{key}":{text}' for key, text in fields]) + "}"


def _set(fields: Fields, key: str, text: Optional[str]) -> None:
    """Replace a field's JSON text (None removes the field); a new field goes last."""
    for index, (name, _) in enumerate(fields):
        if name == key:
            if text is None:
                del fields[index]
            else:
                fields[index] = [key, text]
            return
    if text is not None:
        fields.append([key, text])


def _get(fields: Fields, key: str) -> Optional[str]:
    for name, text in fields:
        if name == key:
            return text
    return None


# Pieces of an ISO text, so that one costs a few lookups: "HH:MM:", "SS.", "mmmZ"; the day
# ("YYYY-MM-DDT") is formatted once per day seen.
_MINUTE_TEXTS = [f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440)]
_SECOND_TEXTS = [f"{s:02d}." for s in range(60)]
_MILLI_TEXTS = [f"{ms:03d}Z" for ms in range(1000)]
_DAY_TEXTS: dict[int, str] = {}


def iso_text(micros: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` for an instant in epoch microseconds (UTC)."""
    seconds, rest = divmod(micros, 1_000_000)
    days, second_of_day = divmod(seconds, 86_400)
    day = _DAY_TEXTS.get(days)
    if day is None:
        if len(_DAY_TEXTS) > 4096:
            _DAY_TEXTS.clear()
        day = _DAY_TEXTS[days] = date.fromordinal(_EPOCH_ORDINAL + days).isoformat() + "T"
    minute, second = divmod(second_of_day, 60)
    return day + _MINUTE_TEXTS[minute] + _SECOND_TEXTS[second] + _MILLI_TEXTS[rest // 1000]


@dataclass
class Injected:
    """A faulty record: its payload, what event_id/event_time it carries, its expected reason."""

    payload: bytes
    event_id: Optional[str]
    event_time_us: Optional[int]
    reason: Optional[str]


class FaultRandom(random.Random):
    """``random.Random`` whose integer draws take fewer Python calls (two for ``randint``
    instead of three).

    The same values as the standard library's for the same seed: ``randint``, ``randrange``
    (one argument), ``choice`` and ``sample`` (small populations) run its algorithm, a
    rejection draw on ``getrandbits``, inline. The fault path makes several draws per faulty
    record, and the library's layers of calls were a tenth of making a record.
    """

    def _below(self, n: int) -> int:
        bits = n.bit_length()
        drawn = self.getrandbits(bits)
        while drawn >= n:
            drawn = self.getrandbits(bits)
        return drawn

    def randint(self, a: int, b: int) -> int:
        return a + self._below(b - a + 1)

    def randrange(self, start: int, stop: Optional[int] = None, step: int = 1) -> int:
        if stop is None and step == 1 and start > 0:
            return self._below(start)
        return super().randrange(start, stop, step)

    def choice(self, seq):
        if not len(seq):
            raise IndexError("Cannot choose from an empty sequence")
        return seq[self._below(len(seq))]

    def sample(self, population, k, *, counts=None):
        n = len(population)
        # The library's small-population branch (a pool, not a set), for k <= 5 and n <= 21.
        if counts is not None or not 0 <= k <= min(n, 5) or n > 21:
            return super().sample(population, k, counts=counts)
        pool = list(population)
        result = [None] * k
        for i in range(k):
            j = self._below(n - i)
            result[i] = pool[j]
            pool[j] = pool[n - i - 1]
        return result


class FaultInjector:
    """Turns a clean reading into a record with one fault; deterministic for a given rng."""

    def __init__(self, rng: random.Random, allowed_lateness_us: int, interval_us: int) -> None:
        self.rng = rng
        self.allowed_lateness_us = allowed_lateness_us
        # Out of order but within the lateness: earlier than the newest event seen so far by
        # less than the lateness, whatever a device's phase in the tick (one interval).
        margin = 30_000_000 + interval_us
        self.out_of_order_max_us = max(1_000_000, allowed_lateness_us - margin)
        self.late_min_us = allowed_lateness_us + 60_000_000 + interval_us

    def inject(
        self, kind: str, fields: Fields, event_id: str, event_time_us: int, clock_us: int
    ) -> Injected:
        """``clock_us``: the run's simulated arrival time (future events are ahead of it)."""
        method = getattr(self, "_" + kind)
        return method(fields, event_id, event_time_us, clock_us)

    def _done(self, fields: Fields, event_id, event_time_us, reason=None) -> Injected:
        return Injected(serialize(fields).encode(), event_id, event_time_us, reason)

    # --- event_time only ----------------------------------------------------------------------
    def event_time(self, kind: str, event_time_us: int, clock_us: int) -> tuple:
        """A kind of :data:`TIME_KINDS`: the event_time JSON text it sends instead, the time
        that text claims (None if none the contract accepts) and the expected reason.

        The stream's fast path puts the text into the device's template; :meth:`inject` into
        the editable members: the same draws, the same bytes.
        """
        return getattr(self, "_time_" + kind)(event_time_us, clock_us)

    def _retimed(self, fields, event_id, event_time_us, clock_us, kind) -> Injected:
        text, claimed, reason = self.event_time(kind, event_time_us, clock_us)
        _set(fields, "event_time", text)
        return self._done(fields, event_id, claimed, reason)

    def _out_of_order(self, fields, event_id, event_time_us, clock_us) -> Injected:
        return self._retimed(fields, event_id, event_time_us, clock_us, OUT_OF_ORDER)

    def _late(self, fields, event_id, event_time_us, clock_us) -> Injected:
        return self._retimed(fields, event_id, event_time_us, clock_us, LATE)

    def _epoch_millis(self, fields, event_id, event_time_us, clock_us) -> Injected:
        return self._retimed(fields, event_id, event_time_us, clock_us, EPOCH_MILLIS)

    def _bad_timestamp(self, fields, event_id, event_time_us, clock_us) -> Injected:
        return self._retimed(fields, event_id, event_time_us, clock_us, BAD_TIMESTAMP)

    def _future_event(self, fields, event_id, event_time_us, clock_us) -> Injected:
        return self._retimed(fields, event_id, event_time_us, clock_us, FUTURE_EVENT)

    # --- valid --------------------------------------------------------------------------------
    def _time_out_of_order(self, event_time_us: int, clock_us: int) -> tuple:
        shifted = event_time_us - self.rng.randint(1_000_000, self.out_of_order_max_us)
        return '"' + iso_text(shifted) + '"', shifted, None

    def _time_late(self, event_time_us: int, clock_us: int) -> tuple:
        # Log-uniform: as many a few minutes late as a few hours late.
        low, high = math.log(self.late_min_us), math.log(max(self.late_min_us + 1, LATE_MAX_US))
        shifted = event_time_us - int(math.exp(self.rng.uniform(low, high)))
        return '"' + iso_text(shifted) + '"', shifted, None

    def _time_epoch_millis(self, event_time_us: int, clock_us: int) -> tuple:
        millis = event_time_us // 1000
        text = str(millis) if self.rng.random() < 0.8 else f'"{millis}"'
        return text, millis * 1000, None

    _EXTRAS = (
        ("firmware", '"2.3.1"'),
        ("rssi_dbm", "-71"),
        ("meta", '{"fw":"2.3.1","boot_count":3,"flags":[1,2]}'),
        ("tags", '["fleet-a","eu-west"]'),
        ("odometer_km", "48213.7"),
        ("note", "null"),
    )

    def _extra_fields(self, fields, event_id, event_time_us, clock_us) -> Injected:
        for key, text in self.rng.sample(self._EXTRAS, self.rng.randint(1, 3)):
            fields.insert(self.rng.randint(0, len(fields)), [key, text])
        return self._done(fields, event_id, event_time_us)

    def _missing_optional(self, fields, event_id, event_time_us, clock_us) -> Injected:
        optional = [k for k, _ in fields if k not in REQUIRED_FIELDS]
        chosen = self.rng.sample(optional, self.rng.randint(1, len(optional)))
        # Absent (None) or JSON null: both mean null (docs/contract.md). Drawn in sample order.
        new = {key: None if self.rng.random() < 0.7 else "null" for key in chosen}
        members = [
            f'"{key}":{new.get(key, text)}'
            for key, text in fields
            if key not in new or new[key] is not None
        ]
        return Injected(("{" + ",".join(members) + "}").encode(), event_id, event_time_us, None)

    def _epoch_millis(self, fields, event_id, event_time_us, clock_us) -> Injected:
        millis = event_time_us // 1000
        text = str(millis) if self.rng.random() < 0.8 else f'"{millis}"'
        _set(fields, "event_time", text)
        return self._done(fields, event_id, millis * 1000)

    # --- invalid ------------------------------------------------------------------------------
    def _malformed_json(self, fields, event_id, event_time_us, clock_us) -> Injected:
        text = serialize(fields)
        variant = self.rng.randrange(7)
        if variant == 0:  # truncated in flight: never ends with the closing brace
            bad = text[: self.rng.randint(1, len(text) - 2)]
        elif variant == 1:  # trailing garbage after the object
            # The contract makes a second object or a stray brace malformed too; these
            # endings are kept so that a seed's record stream stays what it always was.
            bad = text + self.rng.choice((" x", ",", " ]", "\t#"))
        elif variant == 2:  # a NaN token (not strict JSON)
            _set(fields, "temperature_c", "NaN")
            bad = serialize(fields)
        elif variant == 3:  # valid JSON that is not an object
            bad = self.rng.choice(("[" + text + "]", "42", '"' + event_id + '"', "null", "[]"))
        elif variant == 4:  # unquoted keys (a hand-written encoder)
            bad = "{" + ",".join(f"{key}:{value}" for key, value in fields) + "}"
        elif variant == 5:  # a missing comma between two members
            cut = text.index(',"device_id"')
            bad = text[:cut] + " " + text[cut + 1 :]
        else:  # binary garbage: compressed bytes sent as text (no CR or LF bytes)
            return Injected(
                b"\x1f\x8b\x08\x00\x9c\xd2}e\x00\x03\xab\xe6\x02\x00",
                None,
                None,
                Reason.MALFORMED_JSON,
            )
        return Injected(bad.encode(), None, None, Reason.MALFORMED_JSON)

    def _missing_field(self, fields, event_id, event_time_us, clock_us) -> Injected:
        name = self.rng.choice(REQUIRED_FIELDS)
        options = [None, "null"] + (['""'] if name == "event_id" else [])
        text = self.rng.choice(options)
        _set(fields, name, text)
        carried_id = event_id if name != "event_id" else ("" if text == '""' else None)
        carried_time = None if name == "event_time" else event_time_us
        return self._done(fields, carried_id, carried_time, Reason.missing_field(name))

    _BAD_IDS = (
        '"veh 0042"',  # a space
        '""',  # empty
        '"-veh-0042"',  # must start with a letter or digit
        '"' + "v" * 65 + '"',  # longer than 64 characters
        '"veh/0042"',
        '"v\\u00e9h-0042"',  # non-ASCII
        '"veh-0042\\n"',  # a trailing newline
        '{"id":"veh-0042"}',  # an object: its text never matches
        '["veh-0042"]',
    )

    def _bad_device_id(self, fields, event_id, event_time_us, clock_us) -> Injected:
        _set(fields, "device_id", self.rng.choice(self._BAD_IDS))
        return self._done(fields, event_id, event_time_us, Reason.BAD_DEVICE_ID)

    def _bad_type(self, fields, event_id, event_time_us, clock_us) -> Injected:
        name = self.rng.choice(TYPED_FIELDS)
        if name == "schema_version":
            text = self.rng.choice(('"1"', "1.0", "true", "3000000000", "[1]"))
        else:
            current = _get(fields, name) or "12.5"
            text = self.rng.choice(('"' + current + '"', "true", "false", '{"v":1}', "[1.5]"))
        _set(fields, name, text)
        return self._done(fields, event_id, event_time_us, Reason.bad_type(name))

    def _time_bad_timestamp(self, event_time_us: int, clock_us: int) -> tuple:
        iso = iso_text(event_time_us)
        text = self.rng.choice(
            (
                '"' + iso[:-1] + '"',  # no offset
                '"' + iso[:10] + " " + iso[11:] + '"',  # a space instead of T
                '"' + iso[:16] + 'Z"',  # no seconds
                '"2024-02-30T10:00:00Z"',  # a day that does not exist
                '"2024-06-01T24:00:00Z"',  # hour 24
                '"2024-06-01T10:00:00+19:00"',  # offset beyond ±18:00
                '"1969-12-31T23:59:59Z"',  # before 1970
                '"yesterday"',
                '""',
                str(-(event_time_us // 1000)),  # negative epoch
                f"{event_time_us / 1000:.6e}",  # epoch milliseconds as a fraction
                str(MAX_EPOCH_MILLIS + 1),  # after year 9999
                "true",
                '{"ms":' + str(event_time_us // 1000) + "}",
            )
        )
        return text, None, Reason.BAD_TIMESTAMP

    def _time_future_event(self, event_time_us: int, clock_us: int) -> tuple:
        ahead = max(event_time_us, clock_us) + FUTURE_LEAD_US + self.rng.randrange(FUTURE_SPREAD_US)
        epoch = self.rng.random() < 0.2  # as epoch milliseconds, else as ISO text
        text = str(ahead // 1000) if epoch else '"' + iso_text(ahead) + '"'
        return text, ahead // 1000 * 1000, Reason.FUTURE_EVENT

    def _out_of_range(self, fields, event_id, event_time_us, clock_us) -> Injected:
        name = self.rng.choice(METRIC_FIELDS)
        low, high = METRIC_BOUNDS[name]
        roll = self.rng.random()
        if roll < 0.1:
            text = self.rng.choice(("1e400", "-1e400"))  # too large for a double: infinite
        elif roll < 0.55:
            text = f"{high + self.rng.uniform(0.1, max(1.0, high - low)):.1f}"
        else:
            text = f"{low - self.rng.uniform(0.1, max(1.0, high - low)):.1f}"
        _set(fields, name, text)
        return self._done(fields, event_id, event_time_us, Reason.out_of_range(name))


def conflicting_copy(payload: bytes, rng: random.Random) -> bytes:
    """The same event with a different reading: temperature_c moved by 0.1 to 2.0 degrees."""
    event = json.loads(payload)
    low, high = METRIC_BOUNDS["temperature_c"]
    current = event.get("temperature_c")
    base = current if isinstance(current, (int, float)) else 20.0
    delta = rng.choice((-1, 1)) * rng.randint(1, 20) / 10
    new_value = base + delta if low + 2 <= base + delta <= high - 2 else base - delta
    text = f"{new_value:.2f}"
    if text == (f"{current:.2f}" if isinstance(current, (int, float)) else None):
        text = f"{new_value + 0.5:.2f}"
    # Re-encoded compactly: the same content for every other member (extra fields may be
    # objects or arrays), whatever the original's number layout.
    fields = [
        [k, json.dumps(v, separators=(",", ":"), ensure_ascii=False)] for k, v in event.items()
    ]
    _set(fields, "temperature_c", text)
    return serialize(fields).encode()
