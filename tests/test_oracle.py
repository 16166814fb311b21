"""The plain-Python oracle (tests/oracle.py) against the contract, without Spark.

The oracle must agree with every pinned case of tests/contract/test_classify.py; the rest checks
the pieces the agreement tests rely on: Jackson-style text, timestamps, dedup order, aggregates.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import oracle
import pytest
from contract.builders import INGEST_TIME, Case, Json, event_payload
from contract.test_classify import ALL_CASES, NOT_UTF8

UTC = timezone.utc


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_oracle_gives_every_pinned_case_its_reason(case: Case):
    event, reason = oracle.classify(case.payload, case.ingest_time)
    assert reason == case.reason
    assert (event is None) == (reason is not None)


@pytest.mark.parametrize("data", NOT_UTF8.values(), ids=NOT_UTF8.keys())
def test_oracle_bytes_that_are_not_utf8_are_malformed_json(data: bytes):
    assert oracle.classify_bytes(data, INGEST_TIME) == (None, "malformed_json")


def test_oracle_reads_utf8_bytes_as_their_text():
    payload = event_payload(status="über ✓")
    assert oracle.classify_bytes(payload.encode(), INGEST_TIME) == oracle.classify(
        payload, INGEST_TIME
    )


def test_oracle_keeps_every_digit_of_a_long_integer_id():
    event, reason = oracle.classify(event_payload(event_id=Json("7" * 5000)), INGEST_TIME)
    assert reason is None and event["event_id"] == "7" * 5000


def test_oracle_valid_event_is_typed():
    event, reason = oracle.classify(
        event_payload(
            event_id=7,
            event_time="2026-03-01T16:30:00.123456789+05:30",
            schema_version=None,
            temperature_c=-60,
            lat=None,
            status={"a": [1, True, None]},
        ),
        INGEST_TIME,
    )
    assert reason is None
    assert event == {
        "event_id": "7",
        "device_id": "dev-1",
        "event_time": datetime(2026, 3, 1, 11, 0, 0, 123456, tzinfo=UTC),
        "schema_version": 1,
        "temperature_c": -60.0,
        "humidity_pct": 40.0,
        "battery_pct": 80.0,
        "speed_kmh": 12.0,
        "lat": None,
        "lon": 127.0,
        "status": '{"a":[1,true,null]}',
    }


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain", "plain"),
        (42, "42"),
        (-7, "-7"),
        (2**80, str(2**80)),
        (True, "true"),
        (False, "false"),
        ({"a": 1, "b": "x"}, '{"a":1,"b":"x"}'),
        ([1, [], {}], "[1,[],{}]"),
        ({"s": 'q"\\/\n\t\x01é'}, '{"s":"q\\"\\\\/\\n\\t\\u0001é"}'),
        (1000.0, "1000.0"),
        (1e7, "1.0E7"),
        (0.001, "0.001"),
        (1e-4, "1.0E-4"),
        (-0.0, "-0.0"),
        (123456789.5, "1.234567895E8"),
    ],
)
def test_text_of_a_json_value_is_jacksons_compact_text(value, text):
    assert oracle.text_of(value) == text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        ("000000000000007", datetime(1970, 1, 1, 0, 0, 0, 7000, tzinfo=UTC)),
        (253402300799999, datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
        ("2026-03-01T11:59:00Z", datetime(2026, 3, 1, 11, 59, tzinfo=UTC)),
        ("2026-03-01T11:59:00.9999999Z", datetime(2026, 3, 1, 11, 59, 0, 999999, tzinfo=UTC)),
        ("2026-03-01T00:30:00+0130", datetime(2026, 2, 28, 23, tzinfo=UTC)),
        ("2026-02-28T23:00:00-01:00", datetime(2026, 3, 1, tzinfo=UTC)),
    ],
)
def test_event_time_forms(value, expected):
    assert oracle.from_micros(oracle.event_time_micros(value)) == expected


@pytest.mark.parametrize(
    "value", [True, 1.5, -1, 253402300800000, "1e3", "2026-03-01T11:59:00", {}, [], None]
)
def test_bad_event_time_forms(value):
    assert oracle.event_time_micros(value) is None


def test_instant_past_year_9999_is_a_timestamp():
    micros = oracle.event_time_micros("9999-12-31T23:59:59-18:00")
    assert (
        micros
        == oracle.to_micros(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)) + 18 * 3600 * 10**6
    )


def test_naive_and_aware_utc_are_the_same_instant():
    assert oracle.to_micros(datetime(2026, 3, 1)) == oracle.to_micros(
        datetime(2026, 3, 1, tzinfo=UTC)
    )


def copy(
    event_id: str, ingest: datetime, partition: str, offset: str, source: str = "kafka", **content
):
    base = {
        "event_id": event_id,
        "device_id": "dev-1",
        "event_time": datetime(2026, 3, 1, 11, 59, tzinfo=UTC),
        "schema_version": 1,
        "temperature_c": 20.0,
        "humidity_pct": None,
        "battery_pct": None,
        "speed_kmh": None,
        "lat": None,
        "lon": None,
        "status": None,
    }
    return {
        **base,
        **content,
        "source": source,
        "source_partition": partition,
        "source_offset": offset,
        "ingest_time": ingest,
    }


def test_oracle_dedup_orders_by_ingest_time_then_numeric_partition_and_offset():
    later = INGEST_TIME + timedelta(seconds=1)
    copies = [
        copy("a", later, "0", "0"),
        copy("a", INGEST_TIME, "10", "0"),
        copy("a", INGEST_TIME, "9", "5"),
        copy("b", INGEST_TIME, "0", "10"),
        copy("b", INGEST_TIME, "0", "9"),
        copy("c", INGEST_TIME, "0", "49590338271490256608559692538361571095921575989136588802"),
        copy("c", INGEST_TIME, "0", "9959033827149025660855969253836157109592157598913658880"),
        copy("d", INGEST_TIME, "0", "1", source="kinesis"),
        copy("d", INGEST_TIME, "0", "1", source="files"),
    ]
    winners = {
        w["event_id"]: (w["source_offset"], w["source"])
        for w in oracle.dedup_first_received(copies)
    }
    assert winners == {
        "a": ("5", "kafka"),
        "b": ("9", "kafka"),
        "c": ("9959033827149025660855969253836157109592157598913658880", "kafka"),
        "d": ("1", "files"),
    }


def test_oracle_counts_copies_and_distinct_contents():
    copies = [
        copy("a", INGEST_TIME, "0", "1"),
        copy("a", INGEST_TIME, "1", "1"),  # a retry from elsewhere: same content
        copy("a", INGEST_TIME, "0", "2", temperature_c=None, humidity_pct=20.0),
        copy("a", INGEST_TIME, "0", "3", temperature_c=None, humidity_pct=20.0, status="x"),
        copy("b", INGEST_TIME, "0", "4"),
    ]
    counts = {
        w["event_id"]: (w["received_copies"], w["distinct_contents"])
        for w in oracle.dedup_first_received(copies)
    }
    assert counts == {"a": (4, 3), "b": (1, 1)}


def event_at(event_id: str, moment: datetime, **metrics) -> dict:
    return {
        k: v for k, v in copy(event_id, INGEST_TIME, "0", "0", event_time=moment, **metrics).items()
    }


def test_oracle_aggregates_one_minute_ignoring_nulls_and_taking_latest_non_null():
    start = datetime(2026, 3, 1, 23, 59, tzinfo=UTC)
    events = [
        event_at("e1", start, temperature_c=10.0, lat=1.0, status="a"),
        event_at("e3", start + timedelta(seconds=30), temperature_c=None, lat=3.0, status="c"),
        event_at("e2", start + timedelta(seconds=30), temperature_c=30.0, lat=2.0, status=None),
        event_at("e4", start + timedelta(seconds=59.999999), temperature_c=None, lat=None),
        event_at("e5", start + timedelta(seconds=60), temperature_c=None, lat=None),
    ]
    rows = sorted(oracle.aggregate_minutes(events), key=lambda r: r["window_start"])
    first, second = rows
    assert first["event_date"] == date(2026, 3, 1)
    assert first["window_end"] == start + timedelta(minutes=1)
    assert (first["event_count"], first["temperature_c_avg"]) == (4, 20.0)
    assert (first["temperature_c_min"], first["temperature_c_max"]) == (10.0, 30.0)
    assert (first["lat_last"], first["status_last"]) == (3.0, "c")
    assert first["humidity_pct_avg"] is None
    assert second["event_date"] == date(2026, 3, 2)
    assert (second["event_count"], second["temperature_c_avg"], second["lat_last"]) == (
        1,
        None,
        None,
    )
