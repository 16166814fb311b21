"""Every table schema Weir writes or reads, defined once (docs/contract.md).

Tests, writers, the catalog (Glue/Athena DDL) and the data-quality suites import these; no
other module spells out a column list.
"""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

# The event's numeric metrics, in the order of the contract (docs/contract.md). The contract's
# rules (weir.contract.rules: bounds, types) are stated per field of this list.
METRIC_FIELDS: tuple[str, ...] = (
    "temperature_c",
    "humidity_pct",
    "battery_pct",
    "speed_kmh",
    "lat",
    "lon",
)


def _fields(*pairs: tuple[str, DataType], nullable: bool = True) -> list:
    return [StructField(name, kind, nullable) for name, kind in pairs]


# --- RAW zone: every record exactly as received, with where and when it came from --------------
# source_offset is a string because Kinesis sequence numbers (up to 128 digits) fit no integer
# type; ordering compares it by (length, text), numeric order for numbers (weir.contract.dedup).
# payload is always valid UTF-8 text. A record whose bytes are not UTF-8 keeps them exactly in
# payload_bytes (null for every other record), and payload holds them decoded with U+FFFD in
# place of each invalid sequence, for reading only: the record is malformed_json
# (docs/contract.md). payload_bytes comes last so that adding it to an older table (whose
# columns end at ingest_date) gives the same column order as a new table.
RAW_SCHEMA = StructType(
    [
        StructField("source", StringType(), False),  # kafka | kinesis | files
        StructField("source_stream", StringType(), False),  # topic | stream | landing folder
        StructField("source_partition", StringType(), False),  # partition | shard id | file
        StructField("source_offset", StringType(), False),  # offset | sequence no. | line no.
        StructField("record_key", StringType(), True),  # Kafka key | Kinesis partition key
        StructField("payload", StringType(), True),  # the record's bytes as UTF-8 text
        StructField("arrival_time", TimestampType(), True),  # the source's own timestamp
        StructField("ingest_time", TimestampType(), False),  # when Weir wrote it
        StructField("ingest_date", DateType(), False),  # partition column
        StructField("payload_bytes", BinaryType(), True),  # only when not valid UTF-8
    ]
)
RAW_PARTITION_COLUMNS = ("ingest_date",)
SOURCE_COORDINATES = ("source", "source_stream", "source_partition", "source_offset")

# --- The JSON payload as parsed ----------------------------------------------------------------
# Parse 1 (every row): the contract's types. String fields and event_time are read as text
# (event_time may be an ISO string or epoch-ms integer); a field of the wrong JSON type comes
# back null and sets _corrupt_record, the other fields are kept (Spark's partial results).
CORRUPT_RECORD_COLUMN = "_corrupt_record"
PAYLOAD_TYPED_SCHEMA = StructType(
    _fields(
        ("event_id", StringType()),
        ("device_id", StringType()),
        ("event_time", StringType()),
        ("schema_version", IntegerType()),
        *((name, DoubleType()) for name in METRIC_FIELDS),
        ("status", StringType()),
        (CORRUPT_RECORD_COLUMN, StringType()),
    )
)
# Parse 2 (only rows that parse 1 flagged): every field as text, to tell a value of the
# wrong type from malformed JSON (corrupt here too). It reads the payload with STRING_MARK put
# after the opening quote of every JSON string (weir.contract.parse), so a string's text starts
# with the mark and a number's never does, and the field names carry the mark too.
STRING_MARK = "\ue000"  # a private-use character: valid inside a JSON string, no JSON syntax
PAYLOAD_TEXT_SCHEMA = StructType(
    [
        *_fields(*((STRING_MARK + f.name, StringType()) for f in PAYLOAD_TYPED_SCHEMA.fields[:-1])),
        StructField(CORRUPT_RECORD_COLUMN, StringType(), True),
    ]
)

# --- A valid event, typed, with the coordinates that decide which duplicate came first --------
EVENT_SCHEMA = StructType(
    [
        StructField("event_id", StringType(), False),
        StructField("device_id", StringType(), False),
        StructField("event_time", TimestampType(), False),
        StructField("schema_version", IntegerType(), False),
        *_fields(*((name, DoubleType()) for name in METRIC_FIELDS)),
        StructField("status", StringType(), True),
        StructField("source", StringType(), False),
        StructField("source_partition", StringType(), False),
        StructField("source_offset", StringType(), False),
        StructField("ingest_time", TimestampType(), False),
    ]
)
EVENT_COLUMNS = tuple(EVENT_SCHEMA.fieldNames())
# The event's content: what two copies must agree on not to be a conflicting duplicate.
EVENT_CONTENT_COLUMNS = EVENT_COLUMNS[: EVENT_COLUMNS.index("status") + 1]

# --- QUARANTINE zone: the raw record, the first reason, and best-effort identifiers -----------
# payload_bytes last, as in RAW: an older table gains it at the end.
QUARANTINE_SCHEMA = StructType(
    [
        *[f for f in RAW_SCHEMA.fields if f.name not in ("ingest_date", "payload_bytes")],
        StructField("reason", StringType(), False),
        StructField("event_id", StringType(), True),  # as text, when the payload had one
        StructField("device_id", StringType(), True),
        StructField("ingest_date", DateType(), False),
        StructField("payload_bytes", BinaryType(), True),
    ]
)
QUARANTINE_PARTITION_COLUMNS = ("ingest_date",)

# --- telemetry_minute: SPEED, BATCH and the unified serving table (docs/contract.md) --------------
MINUTE_SCHEMA = StructType(
    [
        StructField("device_id", StringType(), False),
        StructField("window_start", TimestampType(), False),
        StructField("window_end", TimestampType(), False),
        StructField("event_date", DateType(), False),
        StructField("event_count", LongType(), False),
        StructField("temperature_c_avg", DoubleType(), True),
        StructField("temperature_c_min", DoubleType(), True),
        StructField("temperature_c_max", DoubleType(), True),
        StructField("humidity_pct_avg", DoubleType(), True),
        StructField("battery_pct_min", DoubleType(), True),
        StructField("speed_kmh_avg", DoubleType(), True),
        StructField("speed_kmh_max", DoubleType(), True),
        StructField("lat_last", DoubleType(), True),
        StructField("lon_last", DoubleType(), True),
        StructField("status_last", StringType(), True),
        StructField("layer", StringType(), False),  # 'batch' | 'speed'
        StructField("computed_at", TimestampType(), False),
    ]
)
MINUTE_KEY = ("device_id", "window_start")
# SPEED stores versions of each window, appended every micro-batch; the version is the
# micro-batch's timestamp in computed_at, and readers keep the newest (weir.speed_table).
SPEED_VERSION_COLUMN = "computed_at"
# With deletion vectors, the compaction that deletes superseded versions (and a MERGE, in
# tables written before the versions) marks rows instead of rewriting the files holding them.
SPEED_TABLE_PROPERTIES = {"delta.enableDeletionVectors": "true"}
MINUTE_PARTITION_COLUMNS = ("event_date",)
LAYER_BATCH = "batch"
LAYER_SPEED = "speed"

# --- batch/events: the batch layer's index of first-received events (docs/batch.md) -----------
# One row per valid event_id over the raw history a complete batch run read: the winning copy,
# how many copies there were and the set of their content fingerprints. An incremental run
# folds its new records into the rows of the event_ids they touch instead of re-reading all
# history (weir.contract.dedup.merge_first_received).
RECEIVED_COPIES = "received_copies"  # also a column of weir.contract.dedup's output
CONTENT_FINGERPRINTS = "content_fingerprints"
BATCH_EVENTS_SCHEMA = StructType(
    [
        *EVENT_SCHEMA.fields,
        StructField(RECEIVED_COPIES, LongType(), False),
        StructField(CONTENT_FINGERPRINTS, ArrayType(LongType(), False), False),
        StructField("event_date", DateType(), False),  # partition column: the winner's date
    ]
)
BATCH_EVENTS_PARTITION_COLUMNS = ("event_date",)
# Set when the index table is created. Nothing reads the index by column statistics (it is
# read by date, its partition, and by event_id lookups that scan the id column; random ids
# give every file the same min and max), and collecting them for every column took 10-15% of
# an index write. numRecords is still kept.
BATCH_EVENTS_TABLE_PROPERTIES = {"delta.dataSkippingNumIndexedCols": "0"}

# --- _control/batch_runs: one row per batch rebuild (docs/batch.md) -----------------------------
BATCH_RUN_SCHEMA = StructType(
    [
        StructField("run_id", StringType(), False),
        StructField("status", StringType(), False),  # succeeded | failed
        StructField("mode", StringType(), False),  # incremental | full | range
        StructField("cutoff", TimestampType(), False),
        StructField("horizon", TimestampType(), False),
        StructField("raw_version", LongType(), True),
        StructField("date_from", DateType(), True),
        StructField("date_to", DateType(), True),
        StructField("records_in", LongType(), True),
        StructField("valid", LongType(), True),
        StructField("quarantined", LongType(), True),
        StructField("duplicates", LongType(), True),
        StructField("conflicting_duplicates", LongType(), True),
        StructField("windows_written", LongType(), True),
        StructField("started_at", TimestampType(), False),
        StructField("finished_at", TimestampType(), True),
        StructField("error", StringType(), True),
        # Added by the batch layer (weir.layers.batch, docs/batch.md):
        StructField("baseline_run_id", StringType(), True),  # incremental: the run built on
        StructField("changes_since", TimestampType(), True),  # incremental: new = ingest >= this
        StructField("dates_rebuilt", ArrayType(DateType()), True),  # null = every date (full)
        StructField("view_version", LongType(), True),  # the batch view's Delta commit, if any
        StructField("index_version", LongType(), True),  # batch/events as this run left it
    ]
)


# --- _control/merge_runs: one row per merge into the unified table (weir.serving.merge)
MERGE_RUN_SCHEMA = StructType(
    [
        StructField("run_id", StringType(), False),
        StructField("status", StringType(), False),  # succeeded | failed
        StructField("scope", StringType(), True),  # full | incremental | none (nothing changed)
        StructField("previous_run_id", StringType(), True),  # the merge this one built on
        StructField("horizon", TimestampType(), True),  # H used; null = no batch run (speed only)
        StructField("batch_run_id", StringType(), True),  # the batch run H came from
        StructField("batch_version", LongType(), True),  # BATCH Delta version read
        StructField("speed_version", LongType(), True),  # SPEED Delta version read
        StructField("serving_version", LongType(), True),  # unified table's version after it
        StructField("partitions_replaced", ArrayType(DateType()), True),  # event dates rewritten
        StructField("rows_written", LongType(), True),  # rows inserted or updated
        StructField("rows_deleted", LongType(), True),
        StructField("files_added", LongType(), True),
        StructField("files_removed", LongType(), True),
        StructField("attempts", IntegerType(), True),  # 1 + retries after conflicting commits
        StructField("started_at", TimestampType(), False),
        StructField("finished_at", TimestampType(), True),
        StructField("error", StringType(), True),
        # The newer batch run the data-quality gate refused to serve (docs/quality.md).
        StructField("blocked_batch_run_id", StringType(), True),
    ]
)


# --- _control/stream_progress: one row per streaming micro-batch (weir.layers.streaming.progress)
STREAM_PROGRESS_SCHEMA = StructType(
    [
        StructField("query_name", StringType(), False),  # raw-kafka, speed-files, ...
        StructField("query_id", StringType(), False),  # stable across restarts (checkpoint)
        StructField("run_id", StringType(), False),  # new at every start
        StructField("batch_id", LongType(), False),
        StructField("trigger_time", TimestampType(), False),  # when the micro-batch started
        StructField("num_input_rows", LongType(), False),
        StructField("input_rows_per_second", DoubleType(), True),
        StructField("processed_rows_per_second", DoubleType(), True),
        StructField("batch_duration_ms", LongType(), True),
        StructField("watermark", TimestampType(), True),  # event-time watermark (speed layer)
        StructField("source_description", StringType(), True),
        StructField("start_offset", StringType(), True),  # JSON, as the source reports it
        StructField("end_offset", StringType(), True),
        StructField("latest_offset", StringType(), True),
        StructField("offsets_behind_latest", LongType(), True),  # Kafka: max over partitions
        StructField("state_rows", LongType(), True),  # rows held in state stores
        StructField("progress_json", StringType(), False),  # Spark's whole progress report
        StructField("progress_date", DateType(), False),  # partition column
    ]
)
STREAM_PROGRESS_PARTITION_COLUMNS = ("progress_date",)


# --- _control/kinesis_gaps: Kinesis records trimmed before they were read, accepted by
# sources.kinesis.fail_on_data_loss: false (weir.layers.streaming.kinesis, docs/kinesis.md)
KINESIS_GAP_SCHEMA = StructType(
    [
        StructField("stream", StringType(), False),
        StructField("shard_id", StringType(), False),
        # The last sequence number archived (exclusive); null: nothing was read of the shard.
        StructField("after_sequence_number", StringType(), True),
        # The first sequence number still retained (exclusive end of the gap); null: the shard
        # holds nothing any more (all of it trimmed, or the whole shard expired).
        StructField("before_sequence_number", StringType(), True),
        StructField("kind", StringType(), False),  # trimmed_position | expired_parent_shard
        StructField("detected_at", TimestampType(), False),
        StructField("holder", StringType(), True),  # the archiver that accepted it
    ]
)


# --- dq/results: one row per expectation per data-quality run (DESIGN.md §9, weir.quality) -----
# run_id names the batch run whose data the checks judged (docs/quality.md: the gate reads the
# rows of one batch run); run_time tells two runs over the same batch run apart.
DQ_RESULTS_SCHEMA = StructType(
    [
        StructField("run_id", StringType(), False),
        StructField("run_time", TimestampType(), False),
        StructField("suite", StringType(), False),  # raw | quarantine | speed | batch | ...
        StructField("table_name", StringType(), False),  # lake-relative: raw/telemetry, ...
        StructField("table_version", LongType(), True),  # Delta version validated; null: none
        StructField("expectation", StringType(), False),  # GX type(column), unique in a suite
        StructField("severity", StringType(), False),  # critical | warning
        StructField("success", BooleanType(), False),
        StructField("observed_value", StringType(), True),
        StructField("threshold", StringType(), True),
    ]
)


def ddl(schema: StructType) -> str:
    """`name TYPE, ...` for a schema, e.g. for spark.createDataFrame or docs."""
    return ", ".join(f"{f.name} {f.dataType.simpleString().upper()}" for f in schema.fields)
