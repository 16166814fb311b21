"""Builders for contract tests: payload text, RAW rows and EVENT rows with sensible defaults."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional, Union

from chispa.row_comparer import are_rows_approx_equal
from chispa.rows_comparer import assert_basic_rows_equality, assert_generic_rows_equality
from chispa.schema_comparer import assert_schema_equality
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql.types import StructType

from weir.schemas import EVENT_COLUMNS, EVENT_SCHEMA, RAW_SCHEMA

UTC = timezone.utc
INGEST_TIME = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVENT_TIME = INGEST_TIME - timedelta(minutes=1)

# A valid event, as its producer would send it.
BASE_EVENT: dict[str, Any] = {
    "event_id": "evt-1",
    "device_id": "dev-1",
    "event_time": "2026-03-01T11:59:00Z",
    "schema_version": 1,
    "temperature_c": 21.5,
    "humidity_pct": 40.0,
    "battery_pct": 80.0,
    "speed_kmh": 12.0,
    "lat": 37.5,
    "lon": 127.0,
    "status": "driving",
}


class Json(str):
    """JSON text put into a payload verbatim (a NaN token, a malformed value, a raw newline)."""


ABSENT = object()  # a field left out of the payload


def json_object(pairs: Iterable[tuple[str, Any]]) -> str:
    """A JSON object's text from (key, value) pairs, keeping repeated keys and Json values."""
    parts = []
    for key, value in pairs:
        text = value if isinstance(value, Json) else json.dumps(value, ensure_ascii=False)
        parts.append(f"{json.dumps(key, ensure_ascii=False)}:{text}")
    return "{" + ",".join(parts) + "}"


def event_payload(**changes: Any) -> str:
    """BASE_EVENT with ``changes`` applied (ABSENT removes a field, Json inserts raw text)."""
    fields = {**BASE_EVENT, **changes}
    return json_object((k, v) for k, v in fields.items() if v is not ABSENT)


def epoch_millis(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@dataclass(frozen=True)
class RawRecord:
    """One RAW row: the payload and where and when it was received."""

    payload: Optional[str]
    ingest_time: datetime = INGEST_TIME
    source: str = "kafka"
    source_partition: str = "0"
    source_offset: str = "0"
    source_stream: str = "telemetry"
    record_key: Optional[str] = None
    payload_bytes: Optional[bytes] = None  # set, as the sources do, only for bytes not UTF-8

    @classmethod
    def received(cls, data: bytes, **coordinates: Any) -> RawRecord:
        """The RAW record of bytes as a source archives them (``weir.sources.records``)."""
        try:
            return cls(data.decode("utf-8"), **coordinates)
        except UnicodeDecodeError:
            return cls(data.decode("utf-8", errors="replace"), payload_bytes=data, **coordinates)

    def as_row(self) -> tuple:
        return (
            self.source,
            self.source_stream,
            self.source_partition,
            self.source_offset,
            self.record_key,
            self.payload,
            self.ingest_time,  # arrival_time
            self.ingest_time,
            self.ingest_time.astimezone(UTC).date(),
            self.payload_bytes,
        )


def raw_frame(spark: SparkSession, records: Iterable[RawRecord]) -> DataFrame:
    return spark.createDataFrame([r.as_row() for r in records], RAW_SCHEMA)


def raw_payloads(
    spark: SparkSession, payloads: Iterable[Optional[str]], ingest_time: datetime = INGEST_TIME
) -> DataFrame:
    """RAW rows for payloads received at one time, source_offset = position ("0", "1", ...)."""
    return raw_frame(
        spark,
        (RawRecord(p, ingest_time, source_offset=str(i)) for i, p in enumerate(payloads)),
    )


# --- Typed events (EVENT_SCHEMA), for dedup and aggregate tests ----------------------------------
BASE_TYPED_EVENT: dict[str, Any] = {
    "event_id": "evt-1",
    "device_id": "dev-1",
    "event_time": EVENT_TIME,
    "schema_version": 1,
    "temperature_c": 21.5,
    "humidity_pct": 40.0,
    "battery_pct": 80.0,
    "speed_kmh": 12.0,
    "lat": 37.5,
    "lon": 127.0,
    "status": "driving",
    "source": "kafka",
    "source_partition": "0",
    "source_offset": "0",
    "ingest_time": INGEST_TIME,
}


def typed_event(**changes: Any) -> dict[str, Any]:
    """An EVENT_SCHEMA row as a dict: BASE_TYPED_EVENT with ``changes``."""
    unknown = set(changes) - set(EVENT_COLUMNS)
    if unknown:
        raise ValueError(f"not EVENT_SCHEMA columns: {sorted(unknown)}")
    return {**BASE_TYPED_EVENT, **changes}


def event_frame(spark: SparkSession, events: Iterable[dict[str, Any]]) -> DataFrame:
    return spark.createDataFrame([tuple(e[c] for c in EVENT_COLUMNS) for e in events], EVENT_SCHEMA)


def at(hour: int, minute: int, second: float = 0.0, *, day: int = 1) -> datetime:
    """A UTC moment on March ``day`` 2026 (seconds may have a fraction)."""
    whole = int(second)
    micros = round((second - whole) * 1_000_000)
    return datetime(2026, 3, day, hour, minute, whole, micros, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    """A payload and the first quarantine reason the contract gives it (None: a valid event)."""

    id: str
    payload: Optional[str]
    reason: Optional[str]
    ingest_time: datetime = INGEST_TIME


# --- Comparing results --------------------------------------------------------------------------
@dataclass(frozen=True)
class Collected:
    """A DataFrame's schema and rows, computed and collected once."""

    schema: StructType
    rows: list[Row]


def collect(frame: DataFrame) -> Collected:
    return Collected(frame.schema, frame.collect())


def rows_of(schema: StructType, values: Iterable[tuple]) -> list[Row]:
    """Python values as ``collect()`` returns them (timestamps as naive local datetimes)."""
    return [schema.fromInternal(schema.toInternal(v)) for v in values]


def _row_order(row: Row) -> list:
    return [(value is not None, str(value)) for value in row]


def assert_rows_equal(
    actual: Union[DataFrame, Collected],
    schema: StructType,
    expected: Iterable[tuple],
    *,
    where: Optional[Callable[[Row], bool]] = None,
    precision: Optional[float] = None,
) -> None:
    """chispa's schema and side-by-side row comparison, ignoring row order and nullability.

    Like ``assert_df_equality(actual, expected_df, ignore_row_order=True)``, but the expected
    rows never go through Spark and rows are sorted in Python: on two shared cores, the jobs a
    Spark sort and a createDataFrame start cost more than the transform under test.
    ``where`` keeps the actual rows it accepts (to check one scenario of a batched result);
    ``precision`` compares doubles approximately (as ``assert_approx_df_equality``).
    """
    if isinstance(actual, DataFrame):
        actual = collect(actual)
    assert_schema_equality(actual.schema, schema, ignore_nullable=True)
    actual_rows = sorted((r for r in actual.rows if where is None or where(r)), key=_row_order)
    expected_rows = sorted(rows_of(schema, expected), key=_row_order)
    if precision is None:
        assert_basic_rows_equality(actual_rows, expected_rows)
    else:
        assert_generic_rows_equality(
            actual_rows, expected_rows, are_rows_approx_equal, {"precision": precision}
        )
