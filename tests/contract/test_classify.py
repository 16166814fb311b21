"""classify_records, valid_events, quarantine_rows: one case per rule of docs/contract.md.

Every case of the table below is classified by ONE Spark job (the module-scoped ``reasons``
fixture); each test then checks its own cases, so a failure names the rule it pins. The same
table is checked against the plain-Python oracle in tests/test_oracle.py.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Optional

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from contract.builders import (
    ABSENT,
    BASE_EVENT,
    EVENT_TIME,
    INGEST_TIME,
    UTC,
    Case,
    Json,
    RawRecord,
    assert_rows_equal,
    epoch_millis,
    event_payload,
    raw_frame,
    raw_payloads,
)
from weir.contract import REASON_COLUMN, classify_records, quarantine_rows, valid_events
from weir.contract.rules import (
    FUTURE_TOLERANCE_MINUTES,
    MAX_EPOCH_MILLIS,
    MAX_NESTING_DEPTH,
    MAX_NUMBER_LENGTH,
    METRIC_BOUNDS,
    METRIC_FIELDS,
    REQUIRED_FIELDS,
    TYPED_FIELDS,
    Reason,
    all_reasons,
)
from weir.schemas import EVENT_SCHEMA, QUARANTINE_SCHEMA, RAW_SCHEMA

VALID = None
HORIZON = INGEST_TIME + timedelta(minutes=FUTURE_TOLERANCE_MINUTES)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def just_below(value: float) -> float:
    return math.nextafter(value, -math.inf)


def just_above(value: float) -> float:
    return math.nextafter(value, math.inf)


# --- malformed_json -------------------------------------------------------------------------------
MALFORMED_CASES = [
    Case("null_payload", None, Reason.MALFORMED_JSON),
    Case("empty_payload", "", Reason.MALFORMED_JSON),
    Case("whitespace_only", " \t\r\n", Reason.MALFORMED_JSON),
    Case("plain_text", "hello", Reason.MALFORMED_JSON),
    Case("truncated_object", event_payload()[:-7], Reason.MALFORMED_JSON),
    Case("array_of_objects", f"[{event_payload()}]", Reason.MALFORMED_JSON),
    Case("number_value", "42", Reason.MALFORMED_JSON),
    Case("string_value", '"x"', Reason.MALFORMED_JSON),
    Case("json_null_value", "null", Reason.MALFORMED_JSON),
    Case("boolean_value", "true", Reason.MALFORMED_JSON),
    Case("nan_token", event_payload(temperature_c=Json("NaN")), Reason.MALFORMED_JSON),
    Case("infinity_token", event_payload(speed_kmh=Json("Infinity")), Reason.MALFORMED_JSON),
    Case("minus_infinity_token", event_payload(lon=Json("-Infinity")), Reason.MALFORMED_JSON),
    Case("nan_token_in_extra_field", event_payload(extra=Json("NaN")), Reason.MALFORMED_JSON),
    Case("trailing_text", event_payload() + " x", Reason.MALFORMED_JSON),
    Case("trailing_comma_after_object", event_payload() + ",", Reason.MALFORMED_JSON),
    Case("trailing_extra_brace", event_payload() + "}", Reason.MALFORMED_JSON),
    Case("trailing_text_ending_in_brace", event_payload() + " x}", Reason.MALFORMED_JSON),
    Case("trailing_form_feed", event_payload() + "\f", Reason.MALFORMED_JSON),
    Case("trailing_vertical_tab", event_payload() + "\v", Reason.MALFORMED_JSON),
    Case("trailing_no_break_space", event_payload() + "\u00a0", Reason.MALFORMED_JSON),
    Case("trailing_comma_inside", event_payload()[:-1] + ",}", Reason.MALFORMED_JSON),
    Case("single_quotes", event_payload().replace('"', "'"), Reason.MALFORMED_JSON),
    Case(
        "unquoted_field_name",
        event_payload().replace('"status"', "status"),
        Reason.MALFORMED_JSON,
    ),
    Case("comment", "{/* c */" + event_payload()[1:], Reason.MALFORMED_JSON),
    Case("leading_zero_number", event_payload(temperature_c=Json("021.5")), Reason.MALFORMED_JSON),
    Case("plus_sign_number", event_payload(temperature_c=Json("+21.5")), Reason.MALFORMED_JSON),
    Case("hex_number", event_payload(battery_pct=Json("0x10")), Reason.MALFORMED_JSON),
    Case("raw_newline_in_string", event_payload(status=Json('"a\nb"')), Reason.MALFORMED_JSON),
    Case("invalid_escape", event_payload(status=Json('"a\\xb"')), Reason.MALFORMED_JSON),
    # A malformed payload is malformed_json even when it also lacks every required field.
    Case("malformed_before_missing_field", "{", Reason.MALFORMED_JSON),
    # Exactly one object: nothing after its closing brace, whatever the rest ends with.
    Case(
        "two_objects_back_to_back",
        event_payload() + event_payload(event_id="evt-2"),
        Reason.MALFORMED_JSON,
    ),
    Case(
        "two_objects_on_two_lines", event_payload() + "\n" + event_payload(), Reason.MALFORMED_JSON
    ),
    Case("object_then_empty_object", event_payload() + " {}", Reason.MALFORMED_JSON),
    Case("object_comma_object", event_payload() + "," + event_payload(), Reason.MALFORMED_JSON),
    Case("object_then_array", event_payload() + "[1]", Reason.MALFORMED_JSON),
    Case("trailing_brace_after_space", event_payload() + " }", Reason.MALFORMED_JSON),
    Case(
        "second_object_then_whitespace",
        event_payload() + "{}" + " \r\n",
        Reason.MALFORMED_JSON,
    ),
    Case(
        "nested_object_then_extra_brace",
        event_payload(status={"a": {"b": 1}}) + "}",
        Reason.MALFORMED_JSON,
    ),
    Case(
        "brace_in_a_string_then_extra_brace",
        event_payload(status="a}b{") + "}",
        Reason.MALFORMED_JSON,
    ),
    Case(
        "trailing_unclosed_string_ending_in_brace",
        event_payload() + ' "x\\"}',
        Reason.MALFORMED_JSON,
    ),
    Case(
        "trailing_array_then_object",
        event_payload()[:-1] + ',"a":[1]}],[{}',
        Reason.MALFORMED_JSON,
    ),
    # A byte-order mark is not JSON whitespace (RFC 8259 lets a parser refuse it).
    Case("byte_order_mark", "\ufeff" + event_payload(), Reason.MALFORMED_JSON),
    Case("byte_order_mark_inside_whitespace", " \ufeff" + event_payload(), Reason.MALFORMED_JSON),
    # The bounds of docs/contract.md: nesting depth (the record's object is level 1) and the
    # characters of one number token, sign, point and exponent included.
    Case(
        "nesting_1001_levels",
        event_payload(extra=Json("[" * (MAX_NESTING_DEPTH) + "]" * MAX_NESTING_DEPTH)),
        Reason.MALFORMED_JSON,
    ),
    Case(
        "number_over_the_length_bound_in_extra_field",
        event_payload(counter=Json("1" * (MAX_NUMBER_LENGTH + 1))),
        Reason.MALFORMED_JSON,
    ),
    Case(
        "number_over_the_length_bound_in_metric",
        event_payload(temperature_c=Json("2" * (MAX_NUMBER_LENGTH + 1))),
        Reason.MALFORMED_JSON,
    ),
    Case(
        "negative_fraction_over_the_length_bound",
        event_payload(lat=Json("-0." + "1" * (MAX_NUMBER_LENGTH - 2))),
        Reason.MALFORMED_JSON,
    ),
    Case(
        "number_over_the_length_bound_after_the_object",
        event_payload() + "1" * (MAX_NUMBER_LENGTH + 1) + "}",
        Reason.MALFORMED_JSON,
    ),
]
STRICT_JSON_VALID_CASES = [
    Case("surrounding_json_whitespace", " \t\r\n" + event_payload() + " \t\r\n", VALID),
    Case(
        "nested_objects_and_brackets_in_strings",
        event_payload(status={"a": {"b": "}{"}}, note="]}[{", list=[{"c": []}]),
        VALID,
    ),
    Case("nested_object_then_whitespace", event_payload(status={"a": 1}) + " \r\n", VALID),
    Case(
        "escaped_quotes_and_backslashes_in_strings",
        event_payload(status='a\\"}{\\', note='\\\\"'),
        VALID,
    ),
    Case(
        "nesting_1000_levels",
        event_payload(extra=Json("[" * (MAX_NESTING_DEPTH - 1) + "]" * (MAX_NESTING_DEPTH - 1))),
        VALID,
    ),
    Case(
        "number_at_the_length_bound_in_extra_field",
        event_payload(counter=Json("-" + "1" * (MAX_NUMBER_LENGTH - 1))),
        VALID,
    ),
    Case(
        "id_at_the_number_length_bound",
        event_payload(event_id=Json("7" * MAX_NUMBER_LENGTH)),
        VALID,
    ),
    Case("escaped_newline_in_string", event_payload(status="a\nb"), VALID),
    Case("nan_as_extra_string_is_fine", event_payload(note="NaN"), VALID),
]

# --- missing_field --------------------------------------------------------------------------------
MISSING_CASES = [
    *(
        Case(f"{f}_absent", event_payload(**{f: ABSENT}), Reason.missing_field(f))
        for f in REQUIRED_FIELDS
    ),
    *(
        Case(f"{f}_json_null", event_payload(**{f: None}), Reason.missing_field(f))
        for f in REQUIRED_FIELDS
    ),
    Case("event_id_empty_string", event_payload(event_id=""), Reason.missing_field("event_id")),
    Case("empty_object", "{}", Reason.missing_field("event_id")),
    Case(
        "device_id_and_event_time_absent",
        event_payload(device_id=ABSENT, event_time=ABSENT),
        Reason.missing_field("device_id"),
    ),
    Case(
        "missing_field_before_every_later_fault",
        event_payload(event_time=None, device_id="bad id", temperature_c="x", lat=999),
        Reason.missing_field("event_time"),
    ),
    Case(
        "event_id_repeated_last_is_null",
        event_payload()[:-1] + ',"event_id":null}',
        Reason.missing_field("event_id"),
    ),
]
NOT_MISSING_CASES = [
    Case("event_id_blank_is_present", event_payload(event_id=" "), VALID),
    Case("device_id_empty_is_bad_not_missing", event_payload(device_id=""), Reason.BAD_DEVICE_ID),
    Case(
        "event_time_empty_is_bad_not_missing",
        event_payload(event_time=""),
        Reason.BAD_TIMESTAMP,
    ),
    Case("event_id_zero_is_present", event_payload(event_id=0), VALID),
    Case("event_id_false_is_present", event_payload(event_id=False), VALID),
]

# --- bad_device_id --------------------------------------------------------------------------------
BAD_DEVICE_CASES = [
    Case("device_id_empty", event_payload(device_id=""), Reason.BAD_DEVICE_ID),
    Case("device_id_leading_underscore", event_payload(device_id="_dev"), Reason.BAD_DEVICE_ID),
    Case("device_id_leading_dash", event_payload(device_id="-dev"), Reason.BAD_DEVICE_ID),
    Case("device_id_space", event_payload(device_id="dev 1"), Reason.BAD_DEVICE_ID),
    Case("device_id_slash", event_payload(device_id="dev/1"), Reason.BAD_DEVICE_ID),
    Case("device_id_unicode_letter", event_payload(device_id="dév-1"), Reason.BAD_DEVICE_ID),
    Case(
        "device_id_unicode_escape",
        event_payload(device_id=Json('"d\\u00e9v"')),
        Reason.BAD_DEVICE_ID,
    ),
    Case("device_id_fullwidth_digit", event_payload(device_id="１dev"), Reason.BAD_DEVICE_ID),
    Case("device_id_trailing_newline", event_payload(device_id="dev-1\n"), Reason.BAD_DEVICE_ID),
    Case("device_id_65_chars", event_payload(device_id="d" * 65), Reason.BAD_DEVICE_ID),
    Case("device_id_object", event_payload(device_id={"id": "dev"}), Reason.BAD_DEVICE_ID),
    Case("device_id_array", event_payload(device_id=["dev"]), Reason.BAD_DEVICE_ID),
    Case("device_id_negative_number", event_payload(device_id=-5), Reason.BAD_DEVICE_ID),
    Case(
        "bad_device_id_before_bad_type",
        event_payload(device_id="dev 1", temperature_c="x"),
        Reason.BAD_DEVICE_ID,
    ),
]
GOOD_DEVICE_CASES = [
    Case("device_id_64_chars", event_payload(device_id="d" * 64), VALID),
    Case("device_id_one_char", event_payload(device_id="7"), VALID),
    Case("device_id_every_punctuation", event_payload(device_id="a_b.c:d-e"), VALID),
    Case("device_id_number_text", event_payload(device_id=42), VALID),
    Case("device_id_boolean_text", event_payload(device_id=True), VALID),
]

# --- bad_type -------------------------------------------------------------------------------------
WRONG_TYPES = {
    "numeric_string": "12.5",
    "nan_string": "NaN",
    "boolean": True,
    "false": False,
    "object": {"value": 1},
    "array": [1],
}
BAD_TYPE_CASES = [
    *(
        Case(f"{field}_{kind}", event_payload(**{field: value}), Reason.bad_type(field))
        for field in TYPED_FIELDS
        for kind, value in WRONG_TYPES.items()
    ),
    Case(
        "schema_version_fraction",
        event_payload(schema_version=1.0),
        Reason.bad_type("schema_version"),
    ),
    Case(
        "schema_version_exponent",
        event_payload(schema_version=Json("1e0")),
        Reason.bad_type("schema_version"),
    ),
    Case(
        "schema_version_string",
        event_payload(schema_version="1"),
        Reason.bad_type("schema_version"),
    ),
    Case(
        "schema_version_repeated_last_is_a_string_spelling_the_same_number",
        event_payload()[:-1] + ',"schema_version":"1"}',
        Reason.bad_type("schema_version"),
    ),
    Case(
        "escaped_key_name_is_the_same_field",
        event_payload()[:-1] + ',"temperatur\\u0065_c":"hot"}',
        Reason.bad_type("temperature_c"),
    ),
    Case(
        "key_with_an_escaped_backslash_is_another_field",
        event_payload(lon="x")[:-1] + ',"temperature\\\\_c":"hot"}',
        Reason.bad_type("lon"),
    ),
    Case(
        "wrong_type_beside_escaped_quotes_in_strings",
        event_payload(status='say \\"}\\"', humidity_pct="x"),
        Reason.bad_type("humidity_pct"),
    ),
    Case(
        "schema_version_above_int32",
        event_payload(schema_version=2**31),
        Reason.bad_type("schema_version"),
    ),
    Case(
        "schema_version_3e9",
        event_payload(schema_version=3_000_000_000),
        Reason.bad_type("schema_version"),
    ),
    Case(
        "schema_version_below_int32",
        event_payload(schema_version=-(2**31) - 1),
        Reason.bad_type("schema_version"),
    ),
    Case(
        "bad_type_schema_version_before_metrics",
        event_payload(schema_version="1", temperature_c="x"),
        Reason.bad_type("schema_version"),
    ),
    Case(
        "bad_type_first_metric_in_field_order",
        event_payload(lon="x", humidity_pct="y"),
        Reason.bad_type("humidity_pct"),
    ),
    Case(
        "bad_type_before_bad_timestamp",
        event_payload(lat="x", event_time="yesterday"),
        Reason.bad_type("lat"),
    ),
    Case(
        "bad_type_before_out_of_range",
        event_payload(temperature_c=999, lon="x"),
        Reason.bad_type("lon"),
    ),
]
GOOD_TYPE_CASES = [
    Case("schema_version_int32_max", event_payload(schema_version=2**31 - 1), VALID),
    Case("schema_version_int32_min", event_payload(schema_version=-(2**31)), VALID),
    Case("schema_version_null_defaults", event_payload(schema_version=None), VALID),
    Case("schema_version_absent_defaults", event_payload(schema_version=ABSENT), VALID),
    Case("metric_integer_is_a_number", event_payload(temperature_c=20), VALID),
    Case("metric_exponent_is_a_number", event_payload(speed_kmh=Json("1.2e2")), VALID),
    Case("metrics_all_null", event_payload(**dict.fromkeys(METRIC_FIELDS)), VALID),
    Case("metrics_all_absent", event_payload(**dict.fromkeys(METRIC_FIELDS, ABSENT)), VALID),
    Case("status_number_is_text", event_payload(status=42), VALID),
    Case("status_object_is_text", event_payload(status={"a": [1, True]}), VALID),
]

# --- bad_timestamp --------------------------------------------------------------------------------
EVENT_MILLIS = epoch_millis(EVENT_TIME)
BAD_TS = Reason.BAD_TIMESTAMP
LAST_INGEST = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)


def time_case(name: str, event_time: Any, reason: Optional[str], **options: Any) -> Case:
    """A case that differs from BASE_EVENT only in its event_time."""
    return Case(name, event_payload(event_time=event_time), reason, **options)


TIMESTAMP_CASES = [
    # epoch milliseconds
    time_case("epoch_millis_integer", EVENT_MILLIS, VALID),
    time_case("epoch_millis_string", str(EVENT_MILLIS), VALID),
    time_case("epoch_millis_zero", 0, VALID),
    time_case("epoch_millis_15_digits_leading_zeros", "0" * 14 + "1", VALID),
    time_case("epoch_millis_16_digits", "0" * 15 + "1", BAD_TS),
    time_case("epoch_millis_at_maximum", MAX_EPOCH_MILLIS, VALID, ingest_time=LAST_INGEST),
    time_case("epoch_millis_over_maximum", MAX_EPOCH_MILLIS + 1, BAD_TS, ingest_time=LAST_INGEST),
    time_case("epoch_millis_negative", -1, BAD_TS),
    time_case("epoch_millis_fraction", float(EVENT_MILLIS), BAD_TS),
    time_case("epoch_millis_exponent", Json("1.7e12"), BAD_TS),
    time_case("epoch_millis_leading_space", f" {EVENT_MILLIS}", BAD_TS),
    time_case("epoch_millis_plus_sign", f"+{EVENT_MILLIS}", BAD_TS),
    time_case(
        "epoch_millis_arabic_indic_digits",
        "".join(chr(0x0660 + int(d)) for d in str(EVENT_MILLIS)),
        BAD_TS,
    ),
    time_case("event_time_boolean", True, BAD_TS),
    time_case("event_time_object", {"ms": EVENT_MILLIS}, BAD_TS),
    time_case("event_time_array", [EVENT_MILLIS], BAD_TS),
    time_case("event_time_words", "yesterday", BAD_TS),
    # ISO-8601
    time_case("iso_utc_z", "2026-03-01T11:59:00Z", VALID),
    time_case("iso_offset_with_colon", "2026-03-01T12:59:00+01:00", VALID),
    time_case("iso_offset_without_colon", "2026-03-01T12:59:00+0100", VALID),
    time_case("iso_negative_offset", "2026-03-01T06:29:00-05:30", VALID),
    time_case("iso_negative_zero_offset", "2026-03-01T11:59:00-00:00", VALID),
    time_case("iso_offset_plus_18", "2026-03-02T05:59:00+18:00", VALID),
    time_case("iso_offset_minus_18", "2026-02-28T17:59:00-18:00", VALID),
    time_case("iso_offset_over_18", "2026-03-02T05:59:00+18:01", BAD_TS),
    time_case("iso_offset_19_hours", "2026-03-02T06:59:00+19:00", BAD_TS),
    time_case("iso_offset_minutes_60", "2026-03-01T10:59:00+00:60", BAD_TS),
    time_case("iso_offset_hours_only", "2026-03-01T12:59:00+01", BAD_TS),
    time_case("iso_offset_one_digit_hour", "2026-03-01T12:59:00+1:00", BAD_TS),
    time_case("iso_fraction_1_digit", "2026-03-01T11:59:00.5Z", VALID),
    time_case("iso_fraction_9_digits", "2026-03-01T11:59:00.123456789Z", VALID),
    time_case("iso_fraction_10_digits", "2026-03-01T11:59:00.1234567890Z", BAD_TS),
    time_case("iso_fraction_point_only", "2026-03-01T11:59:00.Z", BAD_TS),
    time_case("iso_without_offset", "2026-03-01T11:59:00", BAD_TS),
    time_case("iso_fraction_without_offset", "2026-03-01T11:59:00.5", BAD_TS),
    time_case("iso_lowercase_t", "2026-03-01t11:59:00Z", BAD_TS),
    time_case("iso_lowercase_z", "2026-03-01T11:59:00z", BAD_TS),
    time_case("iso_space_separator", "2026-03-01 11:59:00Z", BAD_TS),
    time_case("iso_without_seconds", "2026-03-01T11:59Z", BAD_TS),
    time_case("iso_date_only", "2026-03-01", BAD_TS),
    time_case("iso_zone_name", "2026-03-01T11:59:00 UTC", BAD_TS),
    time_case("iso_zone_id_suffix", "2026-03-01T11:59:00Z[UTC]", BAD_TS),
    time_case("iso_trailing_newline", "2026-03-01T11:59:00Z\n", BAD_TS),
    time_case("iso_fullwidth_digits", "２０２６-03-01T11:59:00Z", BAD_TS),
    time_case("iso_five_digit_year", "02026-03-01T11:59:00Z", BAD_TS),
    time_case("iso_february_30", "2026-02-30T11:59:00Z", BAD_TS),
    time_case("iso_february_29_leap_year", "2024-02-29T11:59:00Z", VALID),
    time_case("iso_february_29_common_year", "2025-02-29T11:59:00Z", BAD_TS),
    time_case("iso_month_13", "2026-13-01T11:59:00Z", BAD_TS),
    time_case("iso_month_00", "2026-00-01T11:59:00Z", BAD_TS),
    time_case("iso_day_00", "2026-03-00T11:59:00Z", BAD_TS),
    time_case("iso_hour_24", "2026-02-28T24:00:00Z", BAD_TS),
    time_case("iso_minute_60", "2026-03-01T11:60:00Z", BAD_TS),
    time_case("iso_second_60", "2026-03-01T11:59:60Z", BAD_TS),
    time_case("iso_epoch_start", "1970-01-01T00:00:00Z", VALID),
    time_case("iso_before_1970", "1969-12-31T23:59:59.999999Z", BAD_TS),
    time_case("iso_1970_by_offset", "1970-01-01T01:00:00+01:00", VALID),
    time_case("iso_before_1970_by_offset", "1970-01-01T00:59:59+01:00", BAD_TS),
    Case(
        "bad_timestamp_before_out_of_range",
        event_payload(event_time="soon", temperature_c=999),
        BAD_TS,
    ),
]

# --- future_event ---------------------------------------------------------------------------------
FUTURE_CASES = [
    Case("exactly_5_minutes_ahead_iso", event_payload(event_time=iso(HORIZON)), VALID),
    Case("exactly_5_minutes_ahead_epoch", event_payload(event_time=epoch_millis(HORIZON)), VALID),
    Case(
        "exactly_5_minutes_ahead_nanos_truncated",
        event_payload(event_time="2026-03-01T12:05:00.000000999Z"),
        VALID,
    ),
    Case(
        "one_microsecond_over_5_minutes",
        event_payload(event_time=iso(HORIZON + timedelta(microseconds=1))),
        Reason.FUTURE_EVENT,
    ),
    Case(
        "one_millisecond_over_5_minutes_epoch",
        event_payload(event_time=epoch_millis(HORIZON) + 1),
        Reason.FUTURE_EVENT,
    ),
    Case(
        "future_hidden_by_negative_offset",
        event_payload(event_time="2026-03-01T08:00:00-05:00"),
        Reason.FUTURE_EVENT,
    ),
    Case(
        "past_by_positive_offset",
        event_payload(event_time="2026-03-01T14:00:00+02:30"),
        VALID,
    ),
    Case(
        "far_future_year_9999",
        event_payload(event_time="9999-12-31T23:59:59Z"),
        Reason.FUTURE_EVENT,
    ),
    Case(
        "future_instant_past_year_9999",
        event_payload(event_time="9999-12-31T23:59:59-18:00"),
        Reason.FUTURE_EVENT,
    ),
    Case(
        "future_event_before_out_of_range",
        event_payload(event_time="2030-01-01T00:00:00Z", lat=999),
        Reason.FUTURE_EVENT,
    ),
]

# --- out_of_range ---------------------------------------------------------------------------------
OUT_OF_RANGE_CASES = [
    *(
        Case(f"{field}_{label}", event_payload(**{field: value}), reason)
        for field, (low, high) in METRIC_BOUNDS.items()
        for label, value, reason in (
            ("at_lower_bound", low, VALID),
            ("at_upper_bound", high, VALID),
            ("just_below_lower_bound", just_below(low), Reason.out_of_range(field)),
            ("just_above_upper_bound", just_above(high), Reason.out_of_range(field)),
            ("integer_upper_bound", int(high), VALID),
            ("integer_over_upper_bound", int(high) + 1, Reason.out_of_range(field)),
        )
    ),
    Case(
        "metric_1e400_is_infinite",
        event_payload(temperature_c=Json("1e400")),
        Reason.out_of_range("temperature_c"),
    ),
    Case(
        "metric_minus_1e400_is_infinite",
        event_payload(lon=Json("-1e400")),
        Reason.out_of_range("lon"),
    ),
    Case(
        "metric_huge_integer_is_infinite",
        event_payload(speed_kmh=Json("1" + "0" * 400)),
        Reason.out_of_range("speed_kmh"),
    ),
    Case(
        "metric_1001_digit_integer_is_infinite",
        event_payload(speed_kmh=Json("1" + "0" * 1000)),
        Reason.out_of_range("speed_kmh"),
    ),
    Case(
        "metric_integer_at_the_length_bound_is_infinite",
        event_payload(battery_pct=Json("9" * MAX_NUMBER_LENGTH)),
        Reason.out_of_range("battery_pct"),
    ),
    Case(
        "metric_long_fraction_is_its_double",
        event_payload(humidity_pct=Json("12." + "5" * (MAX_NUMBER_LENGTH - 3))),
        VALID,
    ),
    Case("metric_tiny_underflows_to_zero", event_payload(humidity_pct=Json("1e-400")), VALID),
    Case("metric_negative_zero_at_zero_bound", event_payload(battery_pct=Json("-0.0")), VALID),
    Case(
        "out_of_range_first_metric_in_field_order",
        event_payload(lon=999, battery_pct=101, speed_kmh=-1),
        Reason.out_of_range("battery_pct"),
    ),
    Case("null_metric_is_never_out_of_range", event_payload(lat=None, lon=None), VALID),
]

# --- everything else a valid event may carry ------------------------------------------------------
LARGE_EXTRA = "x" * (1024 * 1024)
LENIENCY_CASES = [
    Case(
        "extra_fields_ignored",
        event_payload(firmware="2.1.0", nested={"a": [1, None, "NaN"]}, temperature="hot"),
        VALID,
    ),
    Case(
        "extra_field_1001_digit_number_ignored",
        event_payload(counter=Json("1" + "0" * 1000)),
        VALID,
    ),
    Case("extra_field_differing_only_in_case_ignored", event_payload(TEMPERATURE_C="hot"), VALID),
    Case("very_large_payload_valid", event_payload(blob=LARGE_EXTRA), VALID),
    Case(
        "very_large_payload_truncated", event_payload(blob=LARGE_EXTRA)[:-3], Reason.MALFORMED_JSON
    ),
    Case("unicode_status", event_payload(status="über 🚗 ✓"), VALID),
    Case(
        "duplicate_key_last_valid_value_wins",
        event_payload()[:-1] + ',"temperature_c":20}',
        VALID,
    ),
    Case(
        "duplicate_key_last_out_of_range_value_wins",
        event_payload()[:-1] + ',"temperature_c":999}',
        Reason.out_of_range("temperature_c"),
    ),
    Case(
        "duplicate_key_last_wins_over_wrong_type",
        event_payload(temperature_c="hot")[:-1] + ',"temperature_c":20}',
        VALID,
    ),
    Case(
        "duplicate_key_last_wrong_type_wins",
        event_payload()[:-1] + ',"temperature_c":"hot"}',
        Reason.bad_type("temperature_c"),
    ),
    Case(
        "duplicate_key_last_string_spelling_the_same_number_wins",
        event_payload()[:-1] + ',"temperature_c":"21.5"}',
        Reason.bad_type("temperature_c"),
    ),
    Case(
        "duplicate_key_last_number_wins_over_its_own_spelling",
        event_payload(temperature_c="21.5")[:-1] + ',"temperature_c":21.5}',
        VALID,
    ),
    Case(
        "duplicate_key_last_fraction_schema_version_wins",
        event_payload()[:-1] + ',"schema_version":1.0}',
        Reason.bad_type("schema_version"),
    ),
    Case(
        "duplicate_key_last_infinite_metric_wins",
        event_payload()[:-1] + ',"lat":1e400}',
        Reason.out_of_range("lat"),
    ),
    Case(
        "infinite_metric_beside_a_wrong_type_is_a_number",
        event_payload(temperature_c=Json("1e400"), lon="x"),
        Reason.bad_type("lon"),
    ),
    Case(
        "numbers_beside_a_wrong_type_are_numbers",
        event_payload(
            temperature_c=Json("-0.0"), humidity_pct=Json("1E1"), lat=Json("0.1"), lon="x"
        ),
        Reason.bad_type("lon"),
    ),
    Case(
        "duplicate_key_last_good_device_wins",
        event_payload(device_id="bad id")[:-1] + ',"device_id":"dev-2"}',
        VALID,
    ),
]

ALL_CASES = [
    *MALFORMED_CASES,
    *STRICT_JSON_VALID_CASES,
    *MISSING_CASES,
    *NOT_MISSING_CASES,
    *BAD_DEVICE_CASES,
    *GOOD_DEVICE_CASES,
    *BAD_TYPE_CASES,
    *GOOD_TYPE_CASES,
    *TIMESTAMP_CASES,
    *FUTURE_CASES,
    *OUT_OF_RANGE_CASES,
    *LENIENCY_CASES,
]


def params(cases: list[Case]) -> list:
    """pytest params named by case id."""
    return [pytest.param(case, id=case.id) for case in cases]


def case_records(cases: list[Case]) -> list[RawRecord]:
    """One RAW record per case, its position in ``cases`` as source_offset."""
    return [
        RawRecord(case.payload, case.ingest_time, source_offset=str(i))
        for i, case in enumerate(cases)
    ]


@pytest.fixture(scope="module")
def classified_cases(spark: SparkSession) -> DataFrame:
    ids = [case.id for case in ALL_CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    classified = raw_frame(spark, case_records(ALL_CASES)).transform(classify_records)
    return classified.cache()


@pytest.fixture(scope="module")
def reasons(classified_cases: DataFrame) -> dict[str, Optional[str]]:
    """Case id -> the reason Spark gave it, from one job over every case."""
    rows = classified_cases.select("source_offset", REASON_COLUMN).collect()
    return {ALL_CASES[int(row.source_offset)].id: row[REASON_COLUMN] for row in rows}


def check(case: Case, reasons: dict[str, Optional[str]]) -> None:
    assert reasons[case.id] == case.reason, f"{case.id}: payload {case.payload!r:.200}"


@pytest.mark.parametrize("case", params(MALFORMED_CASES))
def test_payload_that_is_not_one_strict_json_object_is_malformed_json(case, reasons):
    check(case, reasons)


@pytest.mark.parametrize("case", params(STRICT_JSON_VALID_CASES))
def test_strict_json_allows_whitespace_and_escapes(case, reasons):
    check(case, reasons)


@pytest.mark.parametrize("case", params(MISSING_CASES))
def test_absent_or_null_required_field_is_missing_field(case, reasons):
    check(case, reasons)


@pytest.mark.parametrize("case", params(NOT_MISSING_CASES))
def test_present_non_null_required_field_is_not_missing(case, reasons):
    check(case, reasons)


@pytest.mark.parametrize("case", params(BAD_DEVICE_CASES))
def test_device_id_not_matching_the_pattern_is_bad_device_id(case, reasons):
    check(case, reasons)


@pytest.mark.parametrize("case", params(GOOD_DEVICE_CASES))
def test_device_id_text_matching_the_pattern_is_valid(case, reasons):
    check(case, reasons)


@pytest.mark.parametrize("case", params(BAD_TYPE_CASES))
def test_value_of_the_wrong_json_type_is_bad_type(case, reasons):
    check(case, reasons)


@pytest.mark.parametrize("case", params(GOOD_TYPE_CASES))
def test_value_of_the_right_json_type_or_null_is_valid(case, reasons):
    check(case, reasons)


@pytest.mark.parametrize("case", params(TIMESTAMP_CASES))
def test_event_time_must_be_epoch_millis_or_iso_with_offset(case, reasons):
    check(case, reasons)


@pytest.mark.parametrize("case", params(FUTURE_CASES))
def test_event_more_than_5_minutes_after_ingest_is_future_event(case, reasons):
    check(case, reasons)


@pytest.mark.parametrize("case", params(OUT_OF_RANGE_CASES))
def test_metric_outside_its_inclusive_bounds_is_out_of_range(case, reasons):
    check(case, reasons)


@pytest.mark.parametrize("case", params(LENIENCY_CASES))
def test_extra_fields_large_payloads_unicode_and_repeated_keys(case, reasons):
    check(case, reasons)


def test_every_reason_is_pinned_by_some_case():
    assert {c.reason for c in ALL_CASES} - {VALID} == set(all_reasons())


def test_every_record_is_exactly_one_valid_event_or_one_quarantine_row(classified_cases):
    valid = classified_cases.transform(valid_events).select("source_offset", F.lit("valid"))
    quarantined = classified_cases.transform(quarantine_rows).select("source_offset", "reason")
    outcome = [row[0] for row in valid.unionAll(quarantined).collect()]

    assert len(outcome) == len(ALL_CASES)  # count(raw) = count(valid) + count(quarantine)
    assert sorted(outcome, key=int) == [str(i) for i in range(len(ALL_CASES))]


def test_classify_keeps_the_raw_columns(classified_cases):
    assert classified_cases.columns[: len(RAW_SCHEMA)] == RAW_SCHEMA.fieldNames()


# --- typed values of valid events ---------------------------------------------------------------
def test_valid_events_carry_typed_contract_fields(spark):
    def event(offset: int, **fields: Any) -> tuple:
        values = {
            **BASE_EVENT,
            "event_time": EVENT_TIME,
            **fields,
            "source": "kafka",
            "source_partition": "0",
            "source_offset": str(offset),
            "ingest_time": INGEST_TIME,
        }
        return tuple(values[name] for name in EVENT_SCHEMA.fieldNames())

    at = datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    payloads_and_events = [
        (
            event_payload(event_time="2026-03-01T16:30:00.123456789+05:30"),
            dict(event_time=at + timedelta(microseconds=123456)),
        ),
        (
            event_payload(event_time="2026-03-01T06:00:00.5-0500"),
            dict(event_time=at + timedelta(seconds=0.5)),
        ),
        (
            event_payload(event_time=str(epoch_millis(at) + 7)),
            dict(event_time=at + timedelta(milliseconds=7)),
        ),
        (event_payload(event_time=epoch_millis(at)), dict(event_time=at)),
        (event_payload(schema_version=ABSENT), dict(schema_version=1)),
        (event_payload(schema_version=None), dict(schema_version=1)),
        (event_payload(schema_version=7), dict(schema_version=7)),
        (
            event_payload(
                temperature_c=-60, humidity_pct=None, battery_pct=ABSENT, lon=Json("1.5e2")
            ),
            dict(temperature_c=-60.0, humidity_pct=None, battery_pct=None, lon=150.0),
        ),
        (event_payload(status=ABSENT), dict(status=None)),
        (event_payload(status=""), dict(status="")),
        (event_payload(status="über 🚗"), dict(status="über 🚗")),
        (event_payload(status=Json('"\\u00fcber"')), dict(status="über")),
        (event_payload(status=42), dict(status="42")),
        (event_payload(status=True), dict(status="true")),
        (event_payload(status={"a": 1, "b": [True, None]}), dict(status='{"a":1,"b":[true,null]}')),
        (event_payload(status=Json('{ "a" : [ 1 , "x" ] }')), dict(status='{"a":[1,"x"]}')),
        (event_payload(event_id=12345, device_id=42), dict(event_id="12345", device_id="42")),
        (event_payload(event_id=2**70), dict(event_id=str(2**70))),
        (event_payload()[:-1] + ',"temperature_c":20}', dict(temperature_c=20.0)),
        (
            event_payload(temperature_c="hot")[:-1] + ',"temperature_c":-3.5}',
            dict(temperature_c=-3.5),
        ),
        (event_payload(event_id=Json("7" * 10_000)), dict(event_id="7" * 10_000)),
        (event_payload(lat=Json("12." + "5" * 9_000)), dict(lat=12.555555555555555)),
        (event_payload(status={"a": "}{"}) + "\r\n", dict(status='{"a":"}{"}')),
    ]
    raw = raw_payloads(spark, [payload for payload, _ in payloads_and_events])

    actual = raw.transform(classify_records).transform(valid_events)

    expected = [event(i, **fields) for i, (_, fields) in enumerate(payloads_and_events)]
    assert_rows_equal(actual, EVENT_SCHEMA, expected)


def quarantined(record: RawRecord, reason: str, event_id: Any, device_id: Any) -> tuple:
    """The QUARANTINE row of a RAW record: its columns, the reason and the best-effort ids."""
    raw = dict(zip(RAW_SCHEMA.fieldNames(), record.as_row()))
    values = {**raw, "reason": reason, "event_id": event_id, "device_id": device_id}
    return tuple(values[name] for name in QUARANTINE_SCHEMA.fieldNames())


def test_quarantine_row_keeps_the_raw_record_with_its_first_reason(spark):
    raw_records = [
        RawRecord("{oops", source="kinesis", source_partition="shardId-000", source_offset="495"),
        RawRecord(
            event_payload(event_id="e-7", device_id="dev-7", event_time="soon"), source_offset="8"
        ),
        RawRecord(
            event_payload(event_id="e-9", device_id="dev 9"), source="files", source_offset="9"
        ),
        RawRecord(event_payload(event_id="e-10", device_id=ABSENT), source_offset="10"),
        RawRecord(event_payload(event_id="e-11")),  # valid: no quarantine row
    ]

    actual = raw_frame(spark, raw_records).transform(classify_records).transform(quarantine_rows)

    assert_rows_equal(
        actual,
        QUARANTINE_SCHEMA,
        [
            quarantined(raw_records[0], Reason.MALFORMED_JSON, None, None),
            quarantined(raw_records[1], Reason.BAD_TIMESTAMP, "e-7", "dev-7"),
            quarantined(raw_records[2], Reason.BAD_DEVICE_ID, "e-9", "dev 9"),
            quarantined(raw_records[3], Reason.missing_field("device_id"), "e-10", None),
        ],
    )


# --- bytes that are not UTF-8 -------------------------------------------------------------------
def utf8_event(status: bytes) -> bytes:
    """A valid event's bytes with ``status`` as the raw bytes of its JSON string."""
    return event_payload(status="@").encode().replace(b'"@"', b'"' + status + b'"')


NOT_UTF8 = {
    "lone_continuation_byte": utf8_event(b"a\x80b"),
    "latin1_byte": utf8_event(b"caf\xe9"),
    "overlong_slash": utf8_event(b"\xc0\xaf"),
    "encoded_surrogate": utf8_event(b"\xed\xa0\x80"),
    "code_point_over_u10ffff": utf8_event(b"\xf4\x90\x80\x80"),
    "truncated_sequence_at_the_end": event_payload().encode() + b"\xe2\x82",
    "invalid_byte_outside_strings": event_payload().encode().replace(b"{", b"{\xff ", 1),
}


def test_bytes_that_are_not_utf8_are_malformed_json_and_kept_as_received(spark):
    records = [
        RawRecord.received(data, source_offset=str(i)) for i, data in enumerate(NOT_UTF8.values())
    ]
    # Their text alone, U+FFFD where a byte could not be read, would pass when inside strings.
    text_only = raw_frame(spark, [replace(r, payload_bytes=None) for r in records])
    passing = text_only.transform(classify_records).where(F.col(REASON_COLUMN).isNull())
    assert passing.count() == 5

    actual = raw_frame(spark, records).transform(classify_records).transform(quarantine_rows)

    rows = actual.orderBy(F.col("source_offset").cast("int")).collect()
    assert [row["reason"] for row in rows] == [Reason.MALFORMED_JSON] * len(NOT_UTF8)
    assert [bytes(row["payload_bytes"]) for row in rows] == list(NOT_UTF8.values())


def test_raw_row_holding_bytes_not_utf8_in_its_payload_is_malformed_json(spark):
    # As RAW rows archived before payload_bytes existed hold them: Kafka's value cast to text.
    valid_without_them = utf8_event(b"ok")
    rows = [(data,) for data in (NOT_UTF8["latin1_byte"], valid_without_them)]
    payloads = spark.createDataFrame(rows, "data BINARY").select(
        F.col("data").cast("string").alias("payload"), F.lit(INGEST_TIME).alias("ingest_time")
    )

    reasons = payloads.transform(classify_records).select("payload", REASON_COLUMN).collect()

    assert sorted((row[REASON_COLUMN] or "") for row in reasons) == ["", Reason.MALFORMED_JSON]


def test_utf8_text_beyond_ascii_is_valid_and_keeps_no_bytes(spark):
    data = utf8_event("über ✓ 🚗 \ufffd".encode())
    record = RawRecord.received(data)
    assert record.payload_bytes is None

    actual = raw_frame(spark, [record]).transform(classify_records).transform(valid_events)

    assert [row["status"] for row in actual.collect()] == ["über ✓ 🚗 \ufffd"]


def test_20mb_string_in_an_extra_field_is_a_valid_event(spark):
    blob = "x" * (20 * 1024 * 1024)
    raw = raw_payloads(spark, [event_payload(blob=blob), event_payload(status=blob[:-1] + "}")])

    reasons = raw.transform(classify_records).select(REASON_COLUMN).collect()

    assert [row[0] for row in reasons] == [VALID, VALID]
