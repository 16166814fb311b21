"""Parse and validate raw payloads: every raw record becomes a typed event or a quarantine row.

Shared by the batch and speed layers; built-in Spark functions only (this is the hot path):

* one typed ``from_json`` per record;
* a second, all-text ``from_json`` only for the rare records the first flagged, to tell
  a value of the wrong JSON type (``bad_type``) from malformed JSON;
* a check that the payload is exactly one JSON object (``from_json`` reads the first value
  and ignores what follows), settled for almost every record by two byte scans;
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
    MAX_NESTING_DEPTH,
    MAX_NUMBER_LENGTH,
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
    STRING_MARK,
)

REASON_COLUMN = "quarantine_reason"

_NO_LIMIT = str(2**31 - 1)
# Strict JSON: NaN/Infinity tokens are malformed, and "NaN" strings are not numbers. Spark's
# limits are Jackson's defaults (numbers of 1,000 characters, strings of 20,000,000): the
# contract bounds numbers itself, before the parse (_has_long_number), and strings only by the
# record's size.
_JSON_OPTIONS = {
    "mode": "PERMISSIVE",
    "columnNameOfCorruptRecord": CORRUPT_RECORD_COLUMN,
    "allowNonNumericNumbers": "false",
    "allowSingleQuotes": "false",  # Spark's default is true; strict JSON has only '"'
    "maxNestingDepth": str(MAX_NESTING_DEPTH),
    "maxNumLen": _NO_LIMIT,
    "maxStringLen": _NO_LIMIT,
}
# An object's last non-blank character is its closing brace (blank: JSON's four whitespace).
_ENDS_WITH_CLOSING_BRACE = r"\}[ \t\r\n]*\z"
# A run of number characters outside strings longer than the bound; the look-behind makes the
# search try each run once, from its start (no quadratic rescans of a long run).
_LONG_NUMBER = rf"(?<![-+.0-9eE])[-+.0-9eE]{{{MAX_NUMBER_LENGTH + 1}}}"

_PARSED = "_parsed"  # the typed parse and the one-object check, made in one plan node
_TYPED = f"{_PARSED}.typed"
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


def _quotes_only_delimit(text: Column) -> Column:
    """``text`` with each escaped backslash and escaped quote rewritten as a ``\\u`` escape.

    Inside a JSON string this changes nothing a parser reads; afterwards every ``"`` of valid
    JSON opens or closes a string, so ``"[^"]*+"`` finds the strings, left to right, with no
    backtracking (and no stack depth growing with a string's length).
    """
    return F.replace(
        F.replace(text, F.lit("\\\\"), F.lit("\\u005c")), F.lit('\\"'), F.lit("\\u0022")
    )


def _outside_strings(payload: Column) -> Column:
    """The payload with every JSON string removed (keys too): its structure and numbers."""
    return F.regexp_replace(_quotes_only_delimit(payload), r'"[^"]*+"', "")


def _marked_strings(payload: Column) -> Column:
    """The payload with STRING_MARK after the opening quote of every string: the same JSON,
    except that a string's text (a key's too) now starts with the mark."""
    return F.regexp_replace(_quotes_only_delimit(payload), r'"([^"]*+)"', f'"{STRING_MARK}$1"')


def _has_long_number(payload: Column) -> Column:
    """A number token longer than MAX_NUMBER_LENGTH characters (a short payload has none)."""
    return (F.octet_length(payload) > MAX_NUMBER_LENGTH) & _outside_strings(payload).rlike(
        _LONG_NUMBER
    )


def _is_one_group(brackets: Column) -> Column:
    """Whether a string of brackets closes its first bracket at its very end: the depth,
    counted from 0, comes back to 0 once, after the last character."""

    def step(state: Column, bracket: Column) -> Column:
        depth = state["depth"] + F.when(bracket.isin("{", "["), 1).otherwise(-1)
        closes = state["closes"] + F.when(depth <= 0, 1).otherwise(0)
        return F.struct(depth.alias("depth"), closes.alias("closes"))

    start = F.struct(F.lit(0).alias("depth"), F.lit(0).alias("closes"))
    final = F.aggregate(F.split(brackets, ""), start, step)
    return (final["closes"] == 1) & (final["depth"] == 0)


def _is_one_object(payload: Column) -> Column:
    """For a payload whose start parsed as a JSON object: nothing but whitespace follows it.

    The object's closing brace is its last ``}``. Almost every payload ends with ``}`` and holds
    no other one, which settles it with a scan of bytes (``contains`` on all but the last byte:
    ``instr`` would walk characters, ten times slower). Otherwise (a nested object, a brace in
    a string, trailing whitespace) the brackets outside strings must form one group: after the
    object closes, a second value or trailing text ending in ``}`` opens or closes another.
    Anything else after the object would not end in ``}``.
    """
    all_but_last_byte = payload.cast("binary").substr(F.lit(1), F.octet_length(payload) - 1)
    only_brace_is_last = payload.endswith("}") & ~all_but_last_byte.cast("string").contains("}")
    brackets = F.regexp_replace(_outside_strings(payload), r"[^\[\]{}]++", "")
    return only_brace_is_last | (payload.rlike(_ENDS_WITH_CLOSING_BRACE) & _is_one_group(brackets))


def _is_utf8_text(payload: Column) -> Column:
    """Whether the payload's own bytes are UTF-8. The sources decode every record (a record
    that is not UTF-8 has ``payload_bytes``), but a RAW row archived before they did holds the
    bytes in ``payload`` as they came; decoding changes such bytes, and only such bytes."""
    return F.decode(payload.cast("binary"), "UTF-8") == payload


def _payload_bytes(raw: DataFrame) -> Column:
    """RAW's bytes of a record that is not UTF-8 (null for one that is, or a frame without)."""
    return F.col("payload_bytes") if "payload_bytes" in raw.columns else F.lit(None)


def _event_time_parsed() -> Column:
    """event_time from its text: epoch milliseconds (digits only) or ISO-8601 with an offset.

    Each pattern is tried once per record, in a CASE, so the cheaper digits test comes first
    (15 digits always fit a long). try_cast rather than cast: an impossible date
    (2024-02-30) is null, never an error, whatever spark.sql.ansi.enabled says.
    """
    text = F.col(_PARSED)["typed"]["event_time"]
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


def _text_of(name: str) -> Column:
    """The second parse's text of a field: a string's content after STRING_MARK; a number,
    boolean, object or array as Jackson writes it (1e400 as ``"Infinity"``)."""
    return F.col(_TEXT)[STRING_MARK + name]


def _has_its_type(name: str) -> Column:
    """Whether the field's last value (its text) is of the field's JSON type.

    Spark's typed parse keeps the last value that converted, so a repeated key whose last value
    has the wrong type must be judged on that last value's text; the mark tells a string that
    spells a number from the number.
    """
    text = _text_of(name)
    if name in METRIC_FIELDS:
        number = F.expr(f"try_cast(trim(BOTH '\"' FROM `{_TEXT}`.`{STRING_MARK}{name}`) AS DOUBLE)")
        return ~text.startswith(STRING_MARK) & number.isNotNull()
    integer = F.expr(f"try_cast(`{_TEXT}`.`{STRING_MARK}{name}` AS INT)")
    return text.rlike(r"^-?[0-9]+\z") & integer.isNotNull()


def _first_reason(
    typed: Column, text: Column, one_object: Column, event_time: Column, ingest_time: Column
) -> Column:
    malformed = (
        typed.isNull()
        | (
            typed[CORRUPT_RECORD_COLUMN].isNotNull()
            & (text.isNull() | text[CORRUPT_RECORD_COLUMN].isNotNull())
        )
        | ~one_object
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
        # Only a record the typed parse flagged has text: a value of some field did not convert.
        reason = reason.when(
            _text_of(name).isNotNull() & ~_has_its_type(name), F.lit(Reason.bad_type(name))
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

    Input: rows with at least ``payload`` and ``ingest_time`` (the RAW schema; a record with
    ``payload_bytes`` is malformed_json). Output: the input columns, the contract fields typed
    (``event_time`` as a UTC timestamp, ``schema_version`` defaulted to 1) and the first
    applicable quarantine reason. Pure: no clock, no I/O; one JSON parse per record (two for
    flagged records).
    """
    typed = F.col(_PARSED)["typed"]
    text = F.col(_TEXT)
    event_time = F.col("event_time")
    # Not parsed at all (so malformed_json): bytes that are not UTF-8, or a number too long.
    parse_input = F.when(
        _payload_bytes(raw).isNull()
        & _is_utf8_text(F.col("payload"))
        & ~_has_long_number(F.col("payload")),
        F.col("payload"),
    )
    # The one-object check lives in the parse's node: its rare exact path is a higher-order
    # function, which Spark cannot compile to Java, and an expression that cannot be compiled
    # takes its whole node out of code generation. from_json's node is interpreted anyway;
    # the reason's CASE stays compiled.
    parsed = F.struct(
        F.from_json(parse_input, PAYLOAD_TYPED_SCHEMA, _JSON_OPTIONS).alias("typed"),
        _is_one_object(F.col("payload")).alias("one_object"),
    )
    with_parse = (
        raw.select("*", _once(parsed).alias(_PARSED))
        .select(
            "*",
            _once(
                F.when(
                    typed[CORRUPT_RECORD_COLUMN].isNotNull(),
                    F.from_json(
                        _marked_strings(F.col("payload")), PAYLOAD_TEXT_SCHEMA, _JSON_OPTIONS
                    ),
                )
            ).alias(_TEXT),
        )
        .withColumn(_EVENT_TIME_PARSED, _event_time_parsed())
    )
    with_fields = with_parse.select(
        *raw.columns,
        F.col(_PARSED),
        text,
        typed["event_id"].alias("event_id"),
        typed["device_id"].alias("device_id"),
        _event_time().alias("event_time"),
        F.coalesce(typed["schema_version"], F.lit(DEFAULT_SCHEMA_VERSION)).alias("schema_version"),
        *(typed[name].alias(name) for name in METRIC_FIELDS),
        typed["status"].alias("status"),
    )
    one_object = F.col(_PARSED)["one_object"]
    reason = _first_reason(typed, text, one_object, event_time, F.col("ingest_time"))
    return with_fields.select("*", _once(reason).alias(REASON_COLUMN)).drop(_PARSED, _TEXT)


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
