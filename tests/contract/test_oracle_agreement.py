"""Spark (weir.contract) and the plain-Python oracle (tests/oracle.py) agree on random corpora.

Each seed builds a corpus of valid events, every fault kind, repeated keys, retries and
conflicting duplicates, with random JSON types, forms and whitespace. Both sides then
classify every record, deduplicate and aggregate; they must agree on each record's reason and
typed fields, on each event_id's winner (offset, copies, contents) and on every minute row.

Malformed records include the hard ones: a second value or trailing text ending in `}`, a
byte-order mark, a number over the length bound, nesting over the depth bound, and bytes that
are not UTF-8 (the oracle reads the bytes as received, Spark the RAW row a source makes).

What the generator leaves out, on purpose: fractions or exponents as ids, or inside an object
sent as an id or status: Jackson renders them with Java's Double.toString, which the oracle
imitates only for common values.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Optional

import oracle
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from contract.builders import (
    UTC,
    Json,
    RawRecord,
    assert_rows_equal,
    collect,
    json_object,
    raw_frame,
)
from weir.contract import (
    REASON_COLUMN,
    aggregate_minutes,
    classify_records,
    dedup_first_received,
    valid_events,
)
from weir.contract.rules import (
    MAX_NESTING_DEPTH,
    MAX_NUMBER_LENGTH,
    METRIC_BOUNDS,
    METRIC_FIELDS,
    REQUIRED_FIELDS,
    TYPED_FIELDS,
)
from weir.schemas import LAYER_BATCH, MINUTE_SCHEMA

SEEDS = (7, 1234, 20260301)
RECORDS_PER_SEED = 400
BASE_INGEST = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
COMPUTED_AT = datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
DEVICES = ("dev-1", "dev-2", "veh.a:b_c-3", "D4", "7")
STATUSES = ("driving", "parked", "charging", "über ✓", "🚗 ok", "", 'say "hi"\n')
TYPED_COLUMNS = ("event_id", "device_id", "event_time", "schema_version", *METRIC_FIELDS, "status")

Pairs = list[tuple[str, Any]]
ABSENT_VALUE = object()  # a field the generator leaves out


class Corpus:
    """A seeded corpus of RAW records; ``record_key`` is ``seed:index``."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.records: list[RawRecord] = []
        self.sent: list[Pairs] = []  # fields of events sent so far, for retries and conflicts
        self.coordinates: set[tuple[str, str, str]] = set()
        self.next_id = 0

    def build(self, count: int) -> list[RawRecord]:
        kinds = [
            *("valid", "fault", "retry", "conflict", "invalid_copy", "double_fault"),
            *("bytes", "hard_json"),
        ]
        weights = [50, 25, 8, 7, 4, 6, 3, 8]
        while len(self.records) < count:
            kind = self.rng.choices(kinds, weights)[0]
            if kind != "valid" and kind != "fault" and kind != "double_fault" and not self.sent:
                kind = "valid"
            ingest = self.ingest_time()
            if kind == "valid":
                pairs = self.valid_pairs(ingest)
                self.sent.append(pairs)
                self.emit(self.render(pairs), ingest)
            elif kind == "fault":
                self.emit(self.faulty(self.valid_pairs(ingest), ingest), ingest)
            elif kind == "double_fault":
                once = self.with_fault(self.valid_pairs(ingest), ingest)
                self.emit(self.faulty(once, ingest), ingest)
            elif kind == "retry":
                self.emit(self.render(self.rng.choice(self.sent)), ingest)
            elif kind == "bytes":
                self.emit_bytes(self.not_utf8(self.valid_pairs(ingest)), ingest)
            elif kind == "hard_json":
                self.emit(self.hard_json(self.valid_pairs(ingest)), ingest)
            elif kind == "conflict":
                pairs = self.conflicting(self.rng.choice(self.sent), ingest)
                self.sent.append(pairs)
                self.emit(self.render(pairs), ingest)
            else:
                self.emit(self.faulty(list(self.rng.choice(self.sent)), ingest), ingest)
        return self.records

    # --- coordinates -----------------------------------------------------------------------------
    def ingest_time(self) -> datetime:
        seconds = self.rng.choice([0, 0, 0, 1, 2, 30, 61, 125])
        return BASE_INGEST + timedelta(seconds=seconds, microseconds=self.rng.choice([0, 0, 7]))

    def emit(self, payload: Optional[str], ingest: datetime) -> None:
        self.emit_record(RawRecord(payload), ingest)

    def emit_bytes(self, data: bytes, ingest: datetime) -> None:
        self.emit_record(RawRecord.received(data), ingest)

    def emit_record(self, received: RawRecord, ingest: datetime) -> None:
        rng = self.rng
        while True:
            source = rng.choice(["kafka", "kafka", "kinesis", "files"])
            if source == "kafka":
                partition, offset = (
                    str(rng.randrange(12)),
                    str(rng.randrange(10 ** rng.randint(1, 4))),
                )
            elif source == "kinesis":
                partition = f"shardId-{rng.randrange(3):012d}"
                offset = str(rng.randrange(10 ** rng.choice([20, 55, 56])))
            else:
                partition, offset = f"part-{rng.randrange(3)}.jsonl", str(rng.randrange(200))
            if (source, partition, offset) not in self.coordinates:
                break
        self.coordinates.add((source, partition, offset))
        key = f"{self.seed}:{len(self.records)}"
        self.records.append(
            replace(
                received,
                ingest_time=ingest,
                source=source,
                source_partition=partition,
                source_offset=offset,
                record_key=key,
            )
        )

    # --- valid events ----------------------------------------------------------------------------
    def valid_pairs(self, ingest: datetime) -> Pairs:
        rng = self.rng
        self.next_id += 1
        pairs: Pairs = [
            ("event_id", self.event_id()),
            ("device_id", rng.choice(DEVICES) if rng.random() > 0.05 else 7),
            ("event_time", self.event_time(ingest)),
        ]
        version = rng.choices([None, "null", 1, 2, 2**31 - 1], [40, 5, 40, 10, 5])[0]
        if version is not None:
            pairs.append(("schema_version", None if version == "null" else version))
        for name in METRIC_FIELDS:
            value = self.metric(name)
            if value is not ABSENT_VALUE:
                pairs.append((name, value))
        status = self.status()
        if status is not ABSENT_VALUE:
            pairs.append(("status", status))
        if rng.random() < 0.2:
            pairs.append(("firmware", rng.choice(["2.1.0", 3, 4.5, None, {"a": [1.5, "x"]}])))
        rng.shuffle(pairs)
        return pairs

    def event_id(self) -> Any:
        roll = self.rng.random()
        if roll < 0.1:
            return self.seed * 1_000_000 + self.next_id  # a number: its text is the id
        if roll < 0.15:
            return f"é-{self.seed}-{self.next_id}"
        return f"evt-{self.seed}-{self.next_id}"

    def event_time(self, ingest: datetime, ahead: Optional[int] = None) -> Any:
        rng = self.rng
        micros = oracle.to_micros(ingest)
        if ahead is not None:
            micros += ahead
        elif rng.random() < 0.1:
            micros += rng.choice([5 * 60 * 10**6, rng.randrange(5 * 60 * 10**6)])
        else:
            micros -= rng.randrange(12 * 60 * 10**6)
        form = rng.choice(["iso_z", "iso_offset", "epoch_int", "epoch_string"])
        if form.startswith("epoch"):
            millis = -(-micros // 1000) if ahead is not None else micros // 1000
            return millis if form == "epoch_int" else str(millis)
        return self.iso(oracle.from_micros(micros), offset=form == "iso_offset", exact=ahead)

    def iso(self, moment: datetime, offset: bool, exact: Optional[int] = None) -> str:
        rng = self.rng
        minutes = rng.choice([0, 60, -300, 330, -570, 1080, -1080, 45, 825]) if offset else 0
        local = moment + timedelta(minutes=minutes)
        digits = rng.randint(6, 9) if exact is not None else rng.choice([0, 1, 3, 6, 7, 9])
        fraction = f"{local.microsecond:06d}" + "".join(rng.choice("0123456789") for _ in range(3))
        text = local.strftime("%Y-%m-%dT%H:%M:%S") + ("." + fraction[:digits] if digits else "")
        if not offset:
            return text + "Z"
        sign = "-" if minutes < 0 else "+"
        hours, mins = divmod(abs(minutes), 60)
        return text + f"{sign}{hours:02d}{rng.choice([':', ''])}{mins:02d}"

    def metric(self, name: str) -> Any:
        rng = self.rng
        low, high = METRIC_BOUNDS[name]
        roll = rng.random()
        if roll < 0.15:
            return ABSENT_VALUE
        if roll < 0.25:
            return None
        if roll < 0.35:
            return rng.randint(int(low), int(high))
        if roll < 0.40:
            return rng.choice([low, high, Json("-0.0") if low == 0 else low])
        if roll < 0.45:
            return Json(f"{rng.uniform(low, high):.4e}")
        return round(rng.uniform(low, high), rng.choice([0, 1, 2, 5, 12]))

    def status(self) -> Any:
        rng = self.rng
        roll = rng.random()
        if roll < 0.2:
            return ABSENT_VALUE
        if roll < 0.3:
            return None
        if roll < 0.85:
            return rng.choice(STATUSES)
        return rng.choice([42, -1, True, False, {"code": 3, "ok": True}, ["a", 1, None]])

    def render(self, pairs: Pairs) -> str:
        """Pairs as JSON text, with random JSON whitespace and ASCII escaping."""
        rng = self.rng
        ascii_only = rng.random() < 0.3
        comma, colon = rng.choice([(",", ":"), (", ", ": "), (" ,\n", " :\t")])
        parts = []
        for key, value in pairs:
            text = value if isinstance(value, Json) else json.dumps(value, ensure_ascii=ascii_only)
            parts.append(f"{json.dumps(key)}{colon}{text}")
        padding = rng.choice(["", "", " ", "\n", "\t \r\n"])
        return padding + "{" + comma.join(parts) + "}" + rng.choice(["", "", " ", "\r\n"])

    # --- faults ----------------------------------------------------------------------------------
    def faulty(self, pairs: Pairs, ingest: datetime) -> Optional[str]:
        """A payload with one fault, malformed JSON included."""
        if self.rng.random() < 0.2:
            return self.malformed(pairs)
        return self.render(self.with_fault(pairs, ingest))

    def hard_json(self, pairs: Pairs) -> str:
        """A payload on an edge of "exactly one JSON object": mostly malformed, some valid."""
        rng = self.rng
        text = self.render(pairs)
        kind = rng.randrange(4)
        if kind == 0:  # anything after the object that ends in a brace
            other = json_object(rng.choice(self.sent)) if self.sent else "{}"
            return text + rng.choice([other, "\n" + other, "}", " x}", ",{}", " {} \r\n", "]{}"])
        if kind == 1:
            return rng.choice(["\ufeff", " \ufeff"]) + text
        if kind == 2:  # a number at or just over the length bound, anywhere
            digits = MAX_NUMBER_LENGTH + rng.choice([0, 1, 1])
            name = rng.choice([*METRIC_FIELDS, "counter", "event_id"])
            return self.render([*pairs, (name, Json("9" * digits))])
        # nesting at or just over the depth bound (the object itself is level 1)
        depth = MAX_NESTING_DEPTH + rng.choice([-1, 0, 0])
        return self.render([*pairs, ("deep", Json("[" * depth + "]" * depth))])

    def not_utf8(self, pairs: Pairs) -> bytes:
        """An event's bytes with an invalid UTF-8 sequence inside a string (or outside one)."""
        rng = self.rng
        data = self.render(pairs).encode()
        bad = rng.choice([b"\x80", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"])
        quote = data.find(b'"', rng.randrange(len(data)))
        at = quote + 1 if quote >= 0 else rng.randrange(len(data))
        return data[:at] + bad + data[at:]

    def malformed(self, pairs: Pairs) -> Optional[str]:
        rng = self.rng
        text = json_object(pairs)
        kind = rng.randrange(10)
        if kind == 0:
            return text[: rng.randrange(1, len(text) - 1)].rstrip("}") or "{"
        if kind == 1:
            return json_object([*pairs, (rng.choice(METRIC_FIELDS), Json("NaN"))])
        if kind == 2:
            return text + rng.choice([" x", ",", "]", " 1", "\f"])
        if kind == 3:
            return text.replace('"', "'")
        if kind == 4:
            return f"[{text}]"
        return rng.choice([None, "", "   ", "null", "42", '"x"', "{", "{,}", '{"event_id"}'])

    def with_fault(self, pairs: Pairs, ingest: datetime) -> Pairs:
        """``pairs`` with one contract fault (not a JSON syntax error)."""
        rng = self.rng
        kind = rng.choice(
            ["missing", "bad_device", "bad_type", "bad_time", "future", "range", "repeat"]
        )
        if kind == "missing":
            name = rng.choice(REQUIRED_FIELDS)
            choice = rng.choice(["drop", "null", "empty"])
            if choice == "drop":
                return [(k, v) for k, v in pairs if k != name]
            return replaced(pairs, name, "" if choice == "empty" and name == "event_id" else None)
        if kind == "bad_device":
            bad = rng.choice(["", "_x", "dev 1", "dév", "d" * 65, "dev-1\n", {"id": 1}, [1], -5])
            return replaced(pairs, "device_id", bad)
        if kind == "bad_type":
            name = rng.choice(TYPED_FIELDS)
            wrong = ["12.5", "NaN", "1", True, False, {"v": 1}, [1]]
            if name == "schema_version":
                wrong += [Json("1.0"), 3_000_000_000, -(2**31) - 1]
            return replaced(pairs, name, rng.choice(wrong))
        if kind == "bad_time":
            bad_times = [
                "2026-03-01T11:59:00",
                "2026-03-01t11:59:00Z",
                "2026-02-30T11:59:00Z",
                "2026-03-01T24:00:00Z",
                "2026-03-01T11:59:00+18:30",
                "2026-03-01T11:59:00+05:60",
                "1969-12-31T23:59:59Z",
                "2026-03-01T11:59:00.1234567890Z",
                -1,
                Json("1.7e12"),
                "0" * 16,
                253402300800000,
                True,
                {"ms": 1},
                "yesterday",
            ]
            return replaced(pairs, "event_time", rng.choice(bad_times))
        if kind == "future":
            ahead = 5 * 60 * 10**6 + rng.choice([1, 1000, rng.randrange(1, 3 * 3600 * 10**6)])
            return replaced(pairs, "event_time", self.event_time(ingest, ahead=ahead))
        if kind == "range":
            name = rng.choice(METRIC_FIELDS)
            low, high = METRIC_BOUNDS[name]
            outside = [
                math.nextafter(low, -math.inf),
                math.nextafter(high, math.inf),
                low - rng.uniform(0.01, 100),
                high + rng.randint(1, 1000),
                Json("1e400"),
                Json("-1e400"),
            ]
            return replaced(pairs, name, rng.choice(outside))
        # A repeated key: the last occurrence decides, whatever it holds; a string spelling
        # the number it repeats too.
        name = rng.choice(TYPED_FIELDS)
        earlier = dict(pairs).get(name)
        spelled = [json.dumps(earlier)] if isinstance(earlier, (int, float)) else []
        last = rng.choice([None, 20, 999, "hot", Json("1e400"), True, 1, *spelled * 3])
        return [*pairs, (name, last)]

    def conflicting(self, pairs: Pairs, ingest: datetime) -> Pairs:
        """The same event_id with different content (or, now and then, the same content)."""
        rng = self.rng
        name = rng.choice([*METRIC_FIELDS, "status", "event_time", "schema_version", "device_id"])
        if name in METRIC_FIELDS:
            return replaced(pairs, name, rng.choice([None, self.metric(name), 0, 1]))
        if name == "status":
            return replaced(pairs, name, rng.choice([None, *STATUSES]))
        if name == "event_time":
            return replaced(pairs, name, self.event_time(ingest))
        if name == "schema_version":
            return replaced(pairs, name, rng.choice([None, 1, 3]))
        return replaced(pairs, name, rng.choice(DEVICES))


def replaced(pairs: Pairs, name: str, value: Any) -> Pairs:
    """``pairs`` with every ``name`` replaced by one ``value`` (or left out: ABSENT_VALUE)."""
    kept = [(k, v) for k, v in pairs if k != name]
    return kept if value is ABSENT_VALUE else [*kept, (name, value)]


# --- running both sides ------------------------------------------------------------------------
def spark_records(classified: DataFrame) -> dict[str, tuple]:
    columns = [
        F.col(name) if name != "event_time" else F.unix_micros(name).alias(name)
        for name in TYPED_COLUMNS
    ]
    rows = classified.select("record_key", REASON_COLUMN, *columns).collect()
    return {
        row.record_key: (
            (row[REASON_COLUMN], None)
            if row[REASON_COLUMN] is not None
            else (None, tuple(row[name] for name in TYPED_COLUMNS))
        )
        for row in rows
    }


def oracle_records(records: list[RawRecord]) -> tuple[dict[str, tuple], list[dict]]:
    outcomes, events = {}, []
    for record in records:
        if record.payload is None:
            event, reason = oracle.classify(None, record.ingest_time)
        else:
            # The bytes as received: the oracle decodes them itself.
            received = record.payload_bytes or record.payload.encode()
            event, reason = oracle.classify_bytes(received, record.ingest_time)
        if event is None:
            outcomes[record.record_key] = (reason, None)
            continue
        typed = tuple(
            oracle.to_micros(event[n]) if n == "event_time" else event[n] for n in TYPED_COLUMNS
        )
        outcomes[record.record_key] = (None, typed)
        events.append(
            {
                **event,
                "source": record.source,
                "source_partition": record.source_partition,
                "source_offset": record.source_offset,
                "ingest_time": record.ingest_time,
            }
        )
    return outcomes, events


def disagreements(records: list[RawRecord], spark_side: dict, oracle_side: dict) -> list[str]:
    return [
        f"record {r.record_key}: spark={spark_side.get(r.record_key)!r} "
        f"oracle={oracle_side[r.record_key]!r} payload={r.payload!r:.300}"
        for r in records
        if spark_side.get(r.record_key) != oracle_side[r.record_key]
    ]


@pytest.fixture(scope="module")
def corpus_run(spark: SparkSession) -> dict[str, Any]:
    """Every seed's corpus in one DataFrame, run through Spark (four jobs) and the oracle.

    The seeds' event ids differ, so their events only meet in the per-minute windows.
    """
    records = [r for seed in SEEDS for r in Corpus(seed).build(RECORDS_PER_SEED)]
    classified = raw_frame(spark, records).transform(classify_records).cache()
    deduped = classified.transform(valid_events).transform(dedup_first_received).cache()
    result = {
        "records": records,
        "spark_records": spark_records(classified),
        "spark_winners": deduped.select(
            "event_id",
            "source",
            "source_partition",
            "source_offset",
            "received_copies",
            "distinct_contents",
        ).collect(),
        "spark_minutes": collect(aggregate_minutes(deduped, LAYER_BATCH, COMPUTED_AT)),
    }
    deduped.unpersist()
    classified.unpersist()
    oracle_outcomes, oracle_events = oracle_records(records)
    oracle_winners = oracle.dedup_first_received(oracle_events)
    result.update(
        oracle_records=oracle_outcomes,
        oracle_winners=oracle_winners,
        oracle_minutes=oracle.aggregate_minutes(oracle_winners),
    )
    return result


@pytest.mark.parametrize("seed", SEEDS)
def test_corpus_has_every_reason_valid_events_and_conflicts(seed: int):
    """Guards the generator: a corpus that lost a fault kind would agree trivially."""
    outcomes, events = oracle_records(Corpus(seed).build(RECORDS_PER_SEED))
    winners = oracle.dedup_first_received(events)
    reasons = {reason for reason, _ in outcomes.values()}
    assert None in reasons
    assert {
        "malformed_json",
        "bad_device_id",
        "bad_timestamp",
        "future_event",
        *(f"missing_field:{name}" for name in REQUIRED_FIELDS),
    } <= reasons
    assert any(r.startswith("bad_type:") for r in reasons if r)
    assert any(r.startswith("out_of_range:") for r in reasons if r)
    copies = [w["received_copies"] for w in winners]
    contents = [w["distinct_contents"] for w in winners]
    assert max(copies) > 1 and max(contents) > 1


@pytest.mark.parametrize("seed", SEEDS)
def test_corpus_has_the_hard_malformed_records(seed: int):
    """Guards the generator: bytes not UTF-8, a second value after the object, a bound."""
    records = Corpus(seed).build(RECORDS_PER_SEED)
    decoder = json.JSONDecoder()

    def after_the_object(payload: str) -> str:
        try:
            _, end = decoder.raw_decode(payload.strip())
        except (ValueError, RecursionError):
            return ""
        return payload.strip()[end:]

    texts = [r.payload for r in records if r.payload is not None and r.payload_bytes is None]
    assert sum(r.payload_bytes is not None for r in records) >= 3
    assert sum(after_the_object(t).endswith("}") for t in texts) >= 3
    assert any(t.lstrip(" ").startswith("\ufeff") for t in texts)
    assert any("9" * (MAX_NUMBER_LENGTH + 1) in t for t in texts)
    assert any("[" * MAX_NESTING_DEPTH in t for t in texts)


def test_spark_and_oracle_agree_on_every_record(corpus_run):
    differences = disagreements(
        corpus_run["records"], corpus_run["spark_records"], corpus_run["oracle_records"]
    )
    assert not differences, f"{len(differences)} disagreements:\n" + "\n".join(differences[:10])


def test_spark_and_oracle_agree_on_dedup_winners(corpus_run):
    def summary(w: Any) -> tuple:
        return (
            w["source"],
            w["source_partition"],
            w["source_offset"],
            w["received_copies"],
            w["distinct_contents"],
        )

    spark_side = {w["event_id"]: summary(w) for w in corpus_run["spark_winners"]}
    oracle_side = {w["event_id"]: summary(w) for w in corpus_run["oracle_winners"]}
    differing = {
        event_id: (spark_side.get(event_id), oracle_side.get(event_id))
        for event_id in spark_side.keys() | oracle_side.keys()
        if spark_side.get(event_id) != oracle_side.get(event_id)
    }
    assert not differing, f"(spark, oracle) by event_id: {dict(list(differing.items())[:10])}"


def test_spark_and_oracle_agree_on_minute_aggregates(corpus_run):
    expected = [
        (*(row[f.name] for f in MINUTE_SCHEMA.fields[:-2]), LAYER_BATCH, COMPUTED_AT)
        for row in corpus_run["oracle_minutes"]
    ]
    assert_rows_equal(corpus_run["spark_minutes"], MINUTE_SCHEMA, expected, precision=1e-9)
