"""Parse and validate raw payloads: every raw record becomes a typed event or a quarantine row.

Shared by the batch and speed layers; built-in Spark functions only (this is the hot path):

* one typed ``from_json`` per record;
* a second, all-text ``from_json`` only for the rare records the first flagged, to tell
  a value of the wrong JSON type (``bad_type``) from malformed JSON;
* the first applicable reason, in the contract's order (docs/contract.md), from one ``CASE WHEN``.

Each costly value (a parse, the event time, the reason) is computed once per record, in its
own plan node: see ``_once``.

Invariant (tested): ``count(raw) = count(valid_events) + count(quarantine_rows)``.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from weir.contract.rules import (
    DEFAULT_SCHEMA_VERSION,
    DEVICE_ID_JAVA_REGEX,
    EPOCH_MILLIS_JAVA_REGEX,
    FUTURE_TOLERANCE_MINUTES,
    ISO_TIMESTAMP_JAVA_REGEX,
    MAX_EPOCH_MILLIS,
    METRIC_BOUNDS,
    METRIC_FIELDS,
    REQUIRED_FIELDS,
    TYPED_FIELDS,
    Reason,
)
from weir.schemas import (
    CORRUPT_RECORD_COLUMN,
    EVENT_COLUMNS,
    PAYLOAD_TEXT_SCHEMA,
    PAYLOAD_TYPED_SCHEMA,
    QUARANTINE_SCHEMA,
)

REASON_COLUMN = "quarantine_reason"

# Strict JSON: NaN/Infinity tokens are malformed, and "NaN" strings are not numbers.
_JSON_OPTIONS = {
    "mode": "PERMISSIVE",
    "columnNameOfCorruptRecord": CORRUPT_RECORD_COLUMN,
    "allowNonNumericNumbers": "false",
    "allowSingleQuotes": "false",  # Spark's default is true; strict JSON has only '"'
}
# Jackson stops after the first JSON value, so `{"a":1} trailing` would parse; the contract
# calls that malformed. An object's last non-blank character is its closing brace.
_ENDS_WITH_CLOSING_BRACE = r"\}[ \t\r\n]*\z"

_TYPED = "_typed"
_TEXT = "_text"
_EVENT_TIME_PARSED = "_event_time_parsed"


def _once(value: Column) -> Column:
    """``value`` as a generated column, which the optimizer cannot copy into other nodes.

    Spark pushes a filter below the projection that defines its column by substituting the
    column's expression: ``valid_events``' filter on the reason would then evaluate the whole
    reason, and the JSON parse under it, a second time, in a filter that cannot be compiled
    to Java (``from_json`` has no code generation) and shares no subexpressions. A filter on
    a generated column stays above the generator, so each value is computed exactly once.
    """
    return F.explode(F.array(value))


def _event_time_parsed() -> Column:
    """event_time from its text: epoch milliseconds (digits only) or ISO-8601 with an offset.

    Each pattern is tried once per record, in a CASE, so the cheaper digits test comes first
    (15 digits always fit a long). try_cast rather than cast: an impossible date
    (2024-02-30) is null, never an error, whatever spark.sql.ansi.enabled says.
    """
    text = F.col(_TYPED)["event_time"]
    millis = text.cast("long")
    return F.when(
        text.rlike(EPOCH_MILLIS_JAVA_REGEX),
        F.when(millis <= MAX_EPOCH_MILLIS, F.timestamp_millis(millis)),
    ).when(
        text.rlike(ISO_TIMESTAMP_JAVA_REGEX), F.expr(f"try_cast({_TYPED}.event_time AS timestamp)")
    )


def _event_time() -> Column:
    """The parsed event time, or null before 1970: that is no device clock, and Python
    (notebooks, toPandas) cannot hold year 0."""
    parsed = F.col(_EVENT_TIME_PARSED)
    return F.when(parsed >= F.timestamp_millis(F.lit(0)), parsed)


def _text_as_typed(name: str) -> Column:
    """The all-text parse's value read back as the typed field's type (null if it is not one).

    Jackson writes a number's text (`20`, `1.0E20`, `"Infinity"` for 1e400), which reads back
    as the typed parse's value; a string, boolean, object or array does not (a string that
    spells the earlier occurrence's number exactly is the one case this cannot tell apart).
    """
    text = f"{_TEXT}.{name}"
    if name in METRIC_FIELDS:
        return F.expr(f"try_cast(trim(BOTH '\"' FROM {text}) AS DOUBLE)")
    return F.when(F.col(_TEXT)[name].rlike(r"^-?[0-9]+\z"), F.expr(f"try_cast({text} AS INT)"))


def _first_reason(typed: Column, text: Column, event_time: Column, ingest_time: Column) -> Column:
    malformed = (
        typed.isNull()
        | (
            typed[CORRUPT_RECORD_COLUMN].isNotNull()
            & (text.isNull() | text[CORRUPT_RECORD_COLUMN].isNotNull())
        )
        # endswith first: a byte comparison settles almost every record without the regex.
        | ~(F.col("payload").endswith("}") | F.col("payload").rlike(_ENDS_WITH_CLOSING_BRACE))
    )
    reason = F.when(malformed, F.lit(Reason.MALFORMED_JSON))
    for name in REQUIRED_FIELDS:
        missing = typed[name].isNull()
        if name == "event_id":
            missing = missing | (typed[name] == "")
        reason = reason.when(missing, F.lit(Reason.missing_field(name)))
    reason = reason.when(
        ~typed["device_id"].rlike(DEVICE_ID_JAVA_REGEX), F.lit(Reason.BAD_DEVICE_ID)
    )
    for name in TYPED_FIELDS:
        # Present as text but null once typed: the JSON value had the wrong type. A repeated
        # key also counts: typed keeps the last value that converted, text the last value
        # (the one that counts), so when they disagree the last value had the wrong type.
        reason = reason.when(
            text[name].isNotNull()
            & (typed[name].isNull() | ~typed[name].eqNullSafe(_text_as_typed(name))),
            F.lit(Reason.bad_type(name)),
        )
    reason = reason.when(event_time.isNull(), F.lit(Reason.BAD_TIMESTAMP))
    reason = reason.when(
        event_time > ingest_time + F.expr(f"INTERVAL {FUTURE_TOLERANCE_MINUTES} MINUTES"),
        F.lit(Reason.FUTURE_EVENT),
    )
    for name in METRIC_FIELDS:
        low, high = METRIC_BOUNDS[name]
        value = typed[name]
        # NOT BETWEEN is null for a null metric, so absent metrics never count as out of range.
        reason = reason.when(~value.between(low, high), F.lit(Reason.out_of_range(name)))
    return reason


def classify_records(raw: DataFrame) -> DataFrame:
    """Add the typed contract fields and ``quarantine_reason`` (null for a valid event).

    Input: rows with at least ``payload`` and ``ingest_time`` (the RAW schema). Output: the
    input columns, the contract fields typed (``event_time`` as a UTC timestamp,
    ``schema_version`` defaulted to 1) and the first applicable quarantine reason.
    Pure: no clock, no I/O; one JSON parse per record (two for flagged records).
    """
    typed = F.col(_TYPED)
    text = F.col(_TEXT)
    event_time = F.col("event_time")
    with_parse = (
        raw.select(
            "*", _once(F.from_json("payload", PAYLOAD_TYPED_SCHEMA, _JSON_OPTIONS)).alias(_TYPED)
        )
        .select(
            "*",
            _once(
                F.when(
                    typed[CORRUPT_RECORD_COLUMN].isNotNull(),
                    F.from_json("payload", PAYLOAD_TEXT_SCHEMA, _JSON_OPTIONS),
                )
            ).alias(_TEXT),
        )
        .withColumn(_EVENT_TIME_PARSED, _event_time_parsed())
    )
    with_fields = with_parse.select(
        *raw.columns,
        typed,
        text,
        typed["event_id"].alias("event_id"),
        typed["device_id"].alias("device_id"),
        _event_time().alias("event_time"),
        F.coalesce(typed["schema_version"], F.lit(DEFAULT_SCHEMA_VERSION)).alias("schema_version"),
        *(typed[name].alias(name) for name in METRIC_FIELDS),
        typed["status"].alias("status"),
    )
    reason = _first_reason(typed, text, event_time, F.col("ingest_time"))
    return with_fields.select("*", _once(reason).alias(REASON_COLUMN)).drop(_TYPED, _TEXT)


def valid_events(classified: DataFrame) -> DataFrame:
    """The records that passed every rule, as EVENT_SCHEMA columns (duplicates still in)."""
    return classified.where(F.col(REASON_COLUMN).isNull()).select(*EVENT_COLUMNS)


def quarantine_rows(classified: DataFrame) -> DataFrame:
    """The records that failed a rule: the raw record, its first reason, best-effort ids."""
    return classified.where(F.col(REASON_COLUMN).isNotNull()).select(
        *(
            F.col(REASON_COLUMN).alias("reason") if name == "reason" else F.col(name)
            for name in QUARANTINE_SCHEMA.fieldNames()
        )
    )
