"""The batch layer (DESIGN.md §6): the authoritative per-minute view, rebuilt from the raw zone.

A run is given a cutoff C. It reads every RAW record with ``ingest_time < C`` from ONE Delta
snapshot version (recorded), so a stream appending to RAW meanwhile changes nothing it sees.
The shared contract transforms classify the records, keep the valid events, deduplicate them
across that whole history (the first received copy wins, even against a twin read by an
earlier run) and aggregate them per device-minute into the BATCH view. The horizon
H = C - allowed lateness, floored to the minute, is recorded with the run in
``_control/batch_runs``: the merge serves batch rows with ``window_end <= H``.

Modes, each ONE atomic Delta commit to the view (or none when nothing changed):

* ``incremental`` (default): replace, with ``replaceWhere``, only the ``event_date``
  partitions whose rows can differ from the previous complete run's (see
  :func:`changed_event_dates` and docs/batch.md for why this is exact);
* ``full``: overwrite the whole view;
* ``range``: replace the dates ``--from``..``--to``, a repair tool.

Re-running with the same cutoff gives the same rows (``computed_at`` aside).

``--input PREFIX`` adopts an existing lake of raw JSON-lines files (a Firehose delivery
prefix) before the run: every file not yet archived is appended to RAW as the files source
would have archived it, stamped with the file's modification time (:func:`adopt_files`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, Callable, Optional
from urllib.parse import urlparse

from delta.tables import DeltaTable
from pyspark import StorageLevel
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.config import ConfigError, WeirConfig
from weir.contract import (
    aggregate_minutes,
    classify_records,
    quarantine_rows,
    valid_events,
)
from weir.contract.dedup import (
    CONTENT_FINGERPRINTS,
    RECEIVED_COPIES,
    first_received_with_contents,
    merge_first_received,
)
from weir.contract.parse import REASON_COLUMN
from weir.control import (
    COMPLETE_MODES,
    MODE_FULL,
    MODE_INCREMENTAL,
    MODE_RANGE,
    RUN_FAILED,
    RUN_SUCCEEDED,
    BatchRun,
    batch_runs,
    record_batch_run,
)
from weir.errors import WeirError
from weir.lake import LakeLayout, date_literals
from weir.layers.checkpoints import latest_table_version
from weir.schemas import (
    BATCH_EVENTS_PARTITION_COLUMNS,
    BATCH_EVENTS_SCHEMA,
    BATCH_EVENTS_TABLE_PROPERTIES,
    EVENT_COLUMNS,
    LAYER_BATCH,
    MINUTE_PARTITION_COLUMNS,
    QUARANTINE_PARTITION_COLUMNS,
    QUARANTINE_SCHEMA,
    RAW_PARTITION_COLUMNS,
    RAW_SCHEMA,
    SOURCE_COORDINATES,
)
from weir.sources.files import FILES, _relative_to, landing_records

log = logging.getLogger(__name__)

UTC = timezone.utc
CUTOFF_EXAMPLE = "2026-03-01T10:00:00Z"

# ISO-8601 instant: date, `T`, hours and minutes, optional seconds and fraction (kept to the
# microsecond), then `Z` or a numeric offset. An instant without an offset is ambiguous.
_INSTANT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(?:(Z)|([+-])(\d{2}):?(\d{2}))"
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MAX_ERROR_CHARS = 2000


# --- Arguments: validated before Spark starts or anything is read ------------------------------


@dataclass(frozen=True)
class RebuildRequest:
    """What a batch run was asked to do, validated: an aware UTC cutoff and a mode."""

    cutoff: datetime
    mode: str = MODE_INCREMENTAL
    date_from: Optional[date] = None
    date_to: Optional[date] = None
    input: Optional[str] = None  # a prefix of raw JSON-lines files to adopt first (a URI)


def default_cutoff(now: datetime) -> datetime:
    """DESIGN.md §6: now, floored to the hour (UTC)."""
    return now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def parse_cutoff(text: str, key: str = "--cutoff") -> datetime:
    """An ISO-8601 instant with ``Z`` or an offset, as an aware UTC datetime.

    ``2026-03-01T10:00:00Z``, ``2026-03-01T12:00+02:00`` and ``2026-03-01T10:00:00.5Z`` are
    accepted; a missing offset or an impossible date raises :class:`ConfigError` naming ``key``.
    """
    bad = ConfigError(
        key, f"{text!r} is not an ISO-8601 instant with Z or an offset, e.g. {CUTOFF_EXAMPLE}"
    )
    match = _INSTANT.fullmatch(text.strip())
    if match is None:
        raise bad
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        offset = timedelta(0)
        if not zulu:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            offset = -offset if sign == "-" else offset
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")[:6]),
            tzinfo=timezone(offset),
        )
    except ValueError:
        raise bad from None
    return moment.astimezone(UTC)


def _parse_date(text: str, key: str) -> date:
    try:
        if not _DATE.fullmatch(text.strip()):
            raise ValueError(text)
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(key, f"{text!r} is not a date YYYY-MM-DD") from None


def input_uri(text: str) -> str:
    """The URI of an ``--input`` prefix: a URI as given, a local path as ``file://`` + absolute.

    No trailing slash, so the prefix is the same key (RAW's ``source_stream``) however it was
    typed. A local folder must exist (checked here, before Spark starts); a remote prefix is
    checked by :func:`rebuild_batch` before anything is written.
    """
    text = text.strip()
    if not text:
        raise ConfigError("--input", "an empty path; give the folder or prefix of raw files")
    if urlparse(text).scheme not in ("", "file"):
        return text.rstrip("/")
    local = text[len("file://") :] if text.startswith("file://") else text
    local = os.path.abspath(os.path.expanduser(local))
    if not os.path.isdir(local):
        raise ConfigError("--input", f"{text!r} is not a folder (raw JSON-lines files under it)")
    return f"file://{local}".rstrip("/")


def rebuild_request(
    cutoff: Optional[str] = None,
    date_from: Optional[str] = None,
    date_to: Optional[str] = None,
    full: bool = False,
    now: Optional[datetime] = None,
    input_path: Optional[str] = None,
) -> RebuildRequest:
    """Validate the arguments of ``weir batch rebuild``; :class:`ConfigError` names the bad one.

    The cutoff defaults to ``now`` floored to the hour and may not lie in the future (a run
    reads records already received). ``--from``/``--to`` go together and exclude ``--full``.
    ``--input`` (files to adopt into RAW first) combines with any mode.
    """
    request = _mode_request(cutoff, date_from, date_to, full, now)
    if input_path is None:
        return request
    return dataclasses.replace(request, input=input_uri(input_path))


def _mode_request(
    cutoff: Optional[str],
    date_from: Optional[str],
    date_to: Optional[str],
    full: bool,
    now: Optional[datetime],
) -> RebuildRequest:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    moment = default_cutoff(now) if cutoff is None else parse_cutoff(cutoff)
    if moment > now:
        raise ConfigError(
            "--cutoff",
            f"{_iso(moment)} is in the future (now {_iso(now)}); "
            "a batch run reads records already received",
        )
    if (date_from is None) != (date_to is None):
        missing = "--to" if date_to is None else "--from"
        raise ConfigError(missing, "--from and --to go together (a range of event dates)")
    if date_from is None or date_to is None:
        return RebuildRequest(cutoff=moment, mode=MODE_FULL if full else MODE_INCREMENTAL)
    if full:
        raise ConfigError("--full", "--full rebuilds every date; drop it or drop --from/--to")
    first, last = _parse_date(date_from, "--from"), _parse_date(date_to, "--to")
    if first > last:
        raise ConfigError("--from", f"{first} is after --to {last}")
    return RebuildRequest(cutoff=moment, mode=MODE_RANGE, date_from=first, date_to=last)


def batch_horizon(cutoff: datetime, allowed_lateness_minutes: int) -> datetime:
    """H = C - allowed lateness, floored to the minute (DESIGN.md §6)."""
    shifted = cutoff.astimezone(UTC) - timedelta(minutes=allowed_lateness_minutes)
    return shifted.replace(second=0, microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- Pure transforms ----------------------------------------------------------------------------


def received_before(raw: DataFrame, cutoff: datetime) -> DataFrame:
    """The raw records a run with this cutoff reads: ``ingest_time < cutoff``."""
    return raw.where(F.col("ingest_time") < F.lit(cutoff))


def first_received_events(raw: DataFrame) -> DataFrame:
    """Raw records -> one valid event per event_id, the first received copy (shared contract),
    with its copies and content fingerprints (the event index's columns)."""
    return (
        raw.transform(classify_records)
        .transform(valid_events)
        .transform(first_received_with_contents)
    )


def event_index_rows(winners: DataFrame) -> DataFrame:
    """BATCH_EVENTS_SCHEMA rows from ``first_received_with_contents`` rows."""
    return winners.select(
        *EVENT_COLUMNS,
        RECEIVED_COPIES,
        CONTENT_FINGERPRINTS,
        event_date_of_event().alias("event_date"),
    )


def event_date_of_event() -> Column:
    """The view's partition for an event: ``event_date`` is the UTC date of ``window_start``,
    and flooring ``event_time`` to its minute never changes its date."""
    return F.to_date(F.col("event_time"))


def changed_event_dates(new_events: DataFrame, deduped: DataFrame, since: datetime) -> DataFrame:
    """The event dates whose minute rows may differ from a view built from records < ``since``.

    ``deduped`` holds the winners over ALL history (``first_received_with_contents``);
    ``new_events`` every valid copy with ``ingest_time >= since``. The view depends on
    winners only, and the received order begins with ``ingest_time``, so:

    * an event_id whose winner was ingested before ``since`` had that same winner before:
      nothing about it changed, whatever twins arrived since (a late retry touches nothing);
    * an event_id whose winner was ingested at or after ``since`` has ALL its copies there:
      the old winner (if any) and the new one are both among ``new_events``, so the dates of
      its copies cover the date it leaves and the date it lands on (a conflicting twin can
      move an event between days).

    Output: one column ``event_date``, distinct.
    """
    unsettled = deduped.where(F.col("ingest_time") >= F.lit(since)).select("event_id")
    return (
        new_events.join(unsettled, "event_id", "left_semi")
        .select(event_date_of_event().alias("event_date"))
        .distinct()
    )


def minute_rows(
    winners: DataFrame, computed_at: datetime, dates: Optional[Sequence[date]] = None
) -> DataFrame:
    """The batch view's rows (MINUTE_SCHEMA) from event index rows (``event_index_rows``),
    for the given event dates only or for all. Read from the index table, the date filter
    is on its partition column, so Delta skips the other dates' files."""
    if dates is not None:
        winners = winners.where(F.col("event_date").isin(list(dates)))
    return aggregate_minutes(winners, LAYER_BATCH, computed_at)


def dates_predicate(dates: Sequence[date]) -> str:
    """The replaceWhere predicate selecting exactly these event_date partitions."""
    return f"event_date IN ({date_literals(dates)})"


def replace_minutes(
    minutes: DataFrame, path: str, run_id: str, dates: Optional[Sequence[date]]
) -> None:
    """Write the batch view atomically: one Delta commit tagged with the run id.

    ``dates`` None overwrites the whole view; otherwise exactly those event_date partitions
    are replaced (``replaceWhere``; Delta rejects a row outside them). Idempotent.
    """
    _replace_dates(minutes, path, run_id, dates, MINUTE_PARTITION_COLUMNS)


def replace_event_index(
    rows: DataFrame, path: str, run_id: str, dates: Optional[Sequence[date]]
) -> None:
    """Write the event index like the view: all of it, or exactly ``dates``, in one commit."""
    _replace_dates(
        rows, path, run_id, dates, BATCH_EVENTS_PARTITION_COLUMNS, BATCH_EVENTS_TABLE_PROPERTIES
    )


def _replace_dates(
    frame: DataFrame,
    path: str,
    run_id: str,
    dates: Optional[Sequence[date]],
    partition_columns: tuple[str, ...],
    table_properties: Mapping[str, str] = MappingProxyType({}),
) -> None:
    # Delta applies `delta.*` writer options as table properties when the write creates the
    # table, and leaves an existing table's properties as they are.
    writer = (
        frame.write.format("delta")
        .mode("overwrite")
        .options(**table_properties)
        .option("userMetadata", run_id)
        .partitionBy(*partition_columns)
    )
    if dates is not None:
        writer = writer.option("replaceWhere", dates_predicate(dates))
    writer.save(path)


# --- Adopting an existing lake of raw files (--input) -------------------------------------------

ADOPT_METADATA_PREFIX = "weir-adopt "  # userMetadata of an adoption's RAW commit, + the prefix


def adopted_records(files: DataFrame, prefix: str) -> DataFrame:
    """RAW rows (RAW_SCHEMA) from whole files under ``prefix``, one per line, as the files
    source maps them, with ``ingest_time`` = the file's modification time.

    Input columns: ``value``, ``file_path``, ``file_modification_time``. Pure. The
    modification time is when the file reached the store (on S3: when Firehose delivered it),
    the closest to "received" the file itself knows, and the same on every re-run: so a record
    is stamped the same whichever run adopts it (docs/batch.md, "Adopting a lake").
    """
    stamped = (
        landing_records(files, prefix)
        .withColumn("ingest_time", F.col("arrival_time"))
        .withColumn("ingest_date", F.to_date(F.col("arrival_time")))
    )
    return stamped.select(
        *(F.col(f.name).cast(f.dataType).alias(f.name) for f in RAW_SCHEMA.fields)
    )


def unarchived_files(listing: DataFrame, archived: DataFrame, prefix: str) -> DataFrame:
    """The files of ``listing`` (``file_path``) whose path under ``prefix`` is not in
    ``archived`` (``source_partition``, the files source's key of a file). Pure."""
    keyed = listing.withColumn("source_partition", _relative_to(F.col("file_path"), prefix))
    return keyed.join(archived, "source_partition", "left_anti").select("file_path")


def _files_under(spark: SparkSession, prefix: str) -> DataFrame:
    """Every file under ``prefix`` (recursively; Spark skips names starting with ``.``/``_``).

    The binaryFile source lists files and reads their content only when the ``content``
    column is selected: selecting metadata only costs a listing. Every name is taken, not just
    ``*.jsonl``: Firehose's object names have no extension (``.gz`` ones are decompressed).
    """
    return (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .load(prefix)
        .select(F.col("_metadata.file_path").alias("file_path"))
    )


def _archived_from(table: DataFrame, prefix: str) -> DataFrame:
    """Rows of RAW or QUARANTINE that the files source or an adoption took from ``prefix``."""
    return table.where((F.col("source") == FILES) & (F.col("source_stream") == prefix))


def _delta_or_none(spark: SparkSession, path: str) -> Optional[DataFrame]:
    if not DeltaTable.isDeltaTable(spark, path):
        return None
    return spark.read.format("delta").load(path)


def input_exists(spark: SparkSession, uri: str) -> bool:
    """Whether ``uri`` names an existing folder or prefix, through Hadoop's file system."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return bool(path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).exists(path))


@dataclass(frozen=True)
class Adoption:
    """What :func:`adopt_files` appended: files, records (lines), quarantined records."""

    prefix: str
    files: int
    records: int
    quarantined: int
    raw_version: Optional[int]  # the RAW commit of the adoption; None when nothing was new


def adopt_files(spark: SparkSession, lake: LakeLayout, prefix: str) -> Adoption:
    """Archive into RAW every file under ``prefix`` not archived yet, with its quarantine rows.

    Idempotent, keyed by file: a file whose path under ``prefix`` is in RAW (source
    ``files``, source_stream ``prefix``) is neither read nor appended again, and all new files
    go to RAW in ONE commit, so a file is in RAW whole or not at all. The invalid lines are
    appended to QUARANTINE first, skipping rows already there: a run killed between the two
    commits re-adopts the same files next time and adds only what is missing, so
    count(raw) = count(valid) + count(quarantine) holds after any completed run.
    """
    raw = _delta_or_none(spark, lake.raw)
    archived = (
        spark.createDataFrame([], "source_partition STRING")
        if raw is None
        else _archived_from(raw, prefix).select("source_partition").distinct()
    )
    unarchived = unarchived_files(_files_under(spark, prefix), archived, prefix)
    paths = [row["file_path"] for row in unarchived.collect()]
    if not paths:
        log.info("batch: every file under %s is already in RAW", prefix)
        return Adoption(prefix, 0, 0, 0, None)
    files = (
        spark.read.format("text")
        .option("wholetext", "true")
        .load(paths)
        .select(
            F.col("value"),
            F.col("_metadata.file_path").alias("file_path"),
            F.col("_metadata.file_modification_time").alias("file_modification_time"),
        )
    )
    records = adopted_records(files, prefix).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        count = records.count()
        quarantined = _append_quarantine_once(spark, lake, records, prefix)
        _append_adopted_raw(records, lake, prefix)
    finally:
        records.unpersist()
    version = raw_version(spark, lake)
    log.info(
        "batch: adopted %s files (%s records, %s quarantined) from %s in RAW version %s",
        len(paths),
        count,
        quarantined,
        prefix,
        version,
    )
    return Adoption(prefix, len(paths), count, quarantined, version)


def _append_adopted_raw(records: DataFrame, lake: LakeLayout, prefix: str) -> None:
    """One RAW commit, tagged with the prefix it adopted (seen in the table's history)."""
    (
        records.write.format("delta")
        .mode("append")
        .option("userMetadata", ADOPT_METADATA_PREFIX + prefix)
        .partitionBy(*RAW_PARTITION_COLUMNS)
        .save(lake.raw)
    )


def _append_quarantine_once(
    spark: SparkSession, lake: LakeLayout, records: DataFrame, prefix: str
) -> int:
    """Append the quarantine rows of ``records`` not already in QUARANTINE (by coordinates)."""
    rows = records.transform(classify_records).transform(quarantine_rows)
    existing = _delta_or_none(spark, lake.quarantine)
    if existing is not None:
        keys = _archived_from(existing, prefix).select("source_partition", "source_offset")
        rows = rows.join(keys, ["source_partition", "source_offset"], "left_anti").select(
            *QUARANTINE_SCHEMA.fieldNames()  # a join puts its keys first
        )
    rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        count = rows.count()
        if count:
            rows.write.format("delta").mode("append").partitionBy(
                *QUARANTINE_PARTITION_COLUMNS
            ).save(lake.quarantine)
    finally:
        rows.unpersist()
    return count


# --- The run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Which dates a run replaces: all (None), a list, and what it was based on."""

    mode: str
    dates: Optional[tuple[date, ...]]
    baseline_run_id: Optional[str] = None
    changes_since: Optional[datetime] = None


class _RunRecord:
    """The run record as a run fills it in: a failure records what was known by then."""

    def __init__(self, run: BatchRun) -> None:
        self.run = run

    def update(self, **changes: Any) -> BatchRun:
        self.run = dataclasses.replace(self.run, **changes)
        return self.run


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_run_id(started: datetime) -> str:
    return f"batch-{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def _snapshot(spark: SparkSession, path: str, version: int) -> DataFrame:
    return spark.read.format("delta").option("versionAsOf", version).load(path)


def _utc_from_micros(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def raw_version(spark: SparkSession, lake: LakeLayout) -> int:
    """The RAW table's current Delta version; :class:`WeirError` when there is no raw table."""
    if not DeltaTable.isDeltaTable(spark, lake.raw):
        raise WeirError(
            f"no raw table at {lake.raw}: nothing to rebuild from; "
            "run `weir stream` first (or check lake.root)"
        )
    return int(DeltaTable.forPath(spark, lake.raw).history(1).first()["version"])


def _changes_since(
    spark: SparkSession, lake: LakeLayout, baseline: BatchRun, version: int
) -> Optional[datetime]:
    """The ingest time from which raw records may be new to this run; None if unknowable.

    Normally the baseline's cutoff. But a micro-batch stamps ``ingest_time`` when it starts
    and commits later (a replay after a crash: much later), so a file committed after the
    baseline's snapshot can hold records ingested before its cutoff: the earliest ingest
    time in those files moves the bound back. Reading only that column of only those files
    is cheap; deleted rows still read there only make the bound earlier (safe).
    """
    if baseline.raw_version is None or baseline.raw_version > version:
        return None  # the raw table was recreated: no common history to diff
    try:
        seen = set(_snapshot(spark, lake.raw, baseline.raw_version).inputFiles())
    except AnalysisException:
        return None  # the baseline's version left the Delta log (log retention)
    added = [f for f in _snapshot(spark, lake.raw, version).inputFiles() if f not in seen]
    if not added:
        return baseline.cutoff
    earliest = (
        spark.read.schema("ingest_time TIMESTAMP")
        .parquet(*added)
        .agg(F.unix_micros(F.min("ingest_time")))
        .first()[0]
    )
    if earliest is None:
        return baseline.cutoff
    return min(baseline.cutoff, _utc_from_micros(earliest))


def _plan(
    spark: SparkSession,
    lake: LakeLayout,
    request: RebuildRequest,
    baseline: Optional[BatchRun],
    version: int,
) -> _Plan:
    """The mode a run takes and, except for incremental runs, its dates (before any dedup).

    An incremental run without a usable baseline (none yet, no view, or raw history that
    cannot be diffed) rebuilds every date and is recorded as ``full``.
    """
    if request.mode == MODE_FULL:
        return _Plan(MODE_FULL, None)
    if request.mode == MODE_RANGE:
        assert request.date_from is not None and request.date_to is not None
        days = (request.date_to - request.date_from).days + 1
        dates = tuple(request.date_from + timedelta(days=n) for n in range(days))
        return _Plan(MODE_RANGE, dates)
    if baseline is None:
        log.info("batch: no earlier complete run; rebuilding every date")
        return _Plan(MODE_FULL, None)
    if not DeltaTable.isDeltaTable(spark, lake.batch):
        log.info("batch: no batch view at %s; rebuilding every date", lake.batch)
        return _Plan(MODE_FULL, None)
    since = _changes_since(spark, lake, baseline, version)
    if since is None:
        log.info("batch: cannot diff raw against run %s; rebuilding every date", baseline.run_id)
        return _Plan(MODE_FULL, None)
    return _Plan(MODE_INCREMENTAL, (), baseline.run_id, since)


def _changed_dates(raw: DataFrame, deduped: DataFrame, since: datetime) -> tuple[date, ...]:
    new_events = raw.where(F.col("ingest_time") >= F.lit(since)).transform(classify_records)
    changed = changed_event_dates(new_events.transform(valid_events), deduped, since)
    return tuple(sorted(row["event_date"] for row in changed.collect()))


_COUNT_FIELDS = ("valid", "quarantined", "duplicates", "conflicting_duplicates")


def _unchanged_since(
    raw: DataFrame, since: datetime, records_in: int, baseline: BatchRun
) -> Optional[dict]:
    """The baseline's counts when this run reads exactly the baseline's records, else None.

    No record with ``ingest_time >= since`` means every record read was read by the baseline
    (see ``_changes_since``); with as many records, the two runs read the same set, so the
    view and the counts are the baseline's and the dedup can be skipped.
    """
    if records_in != baseline.records_in:
        return None
    if raw.where(F.col("ingest_time") >= F.lit(since)).limit(1).count():
        return None
    return {name: getattr(baseline, name) for name in _COUNT_FIELDS} | {"records_in": records_in}


def _run_commit(spark: SparkSession, path: str, run_id: str) -> tuple[Optional[int], int]:
    """(version, rows written) of the commit tagged with ``run_id`` in the view or the event
    index; (None, 0) if none."""
    if not DeltaTable.isDeltaTable(spark, path):
        return None, 0
    history = DeltaTable.forPath(spark, path).history(20)
    row = history.where(F.col("userMetadata") == run_id).first()
    if row is None:
        return None, 0  # Delta skips a replaceWhere that neither adds nor removes a file
    return int(row["version"]), int(row["operationMetrics"].get("numOutputRows", "0"))


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first}"[:_MAX_ERROR_CHARS]


def _latest(runs: Sequence[BatchRun]) -> Optional[BatchRun]:
    """The run that finished last (the same order as ``weir.control.latest_batch_run``)."""
    return max(runs, key=lambda run: (run.finished_at, run.started_at), default=None)


def _check_cutoff_moves_forward(request: RebuildRequest, latest: Optional[BatchRun]) -> None:
    if request.mode == MODE_FULL or latest is None or request.cutoff >= latest.cutoff:
        return
    raise ConfigError(
        "--cutoff",
        f"{_iso(request.cutoff)} is before the cutoff {_iso(latest.cutoff)} of the last "
        f"successful run {latest.run_id}; only --full rebuilds the view as of an earlier cutoff",
    )


def rebuild_batch(
    spark: SparkSession,
    config: WeirConfig,
    request: RebuildRequest,
    clock: Callable[[], datetime] = _utc_now,
) -> BatchRun:
    """Rebuild the batch view as of ``request.cutoff`` and record the run in ``_control``.

    Atomic (one Delta commit to the view, or none when nothing changed) and idempotent (the
    same cutoff gives the same rows, ``computed_at`` aside). With ``request.input``, first
    adopts the files under it into RAW (:func:`adopt_files`, idempotent). Raises
    :class:`ConfigError`, with nothing written, when an incremental or range run would move
    the view back before the last successful run's cutoff or the input does not exist;
    raises :class:`WeirError` after recording a failed run.
    """
    lake = LakeLayout.from_config(config)
    succeeded = [run for run in batch_runs(spark, lake) if run.status == RUN_SUCCEEDED]
    _check_cutoff_moves_forward(request, _latest(succeeded))
    if request.input is not None and not input_exists(spark, request.input):
        raise ConfigError("--input", f"{request.input} does not exist (no file under it)")
    baseline = None
    if request.mode == MODE_INCREMENTAL:
        baseline = _latest([run for run in succeeded if run.mode in COMPLETE_MODES])
    started = clock()
    run = BatchRun(
        run_id=_new_run_id(started),
        status=RUN_FAILED,
        mode=request.mode,
        cutoff=request.cutoff,
        horizon=batch_horizon(request.cutoff, config.timing.allowed_lateness_minutes),
        date_from=request.date_from,
        date_to=request.date_to,
        started_at=started,
    )
    record = _RunRecord(run)
    try:
        done = _execute(spark, lake, request, baseline, record)
        done = dataclasses.replace(done, status=RUN_SUCCEEDED, finished_at=clock())
        record_batch_run(spark, lake, done)
    except Exception as error:
        failed = dataclasses.replace(
            record.run, status=RUN_FAILED, finished_at=clock(), error=_describe(error)
        )
        try:
            record_batch_run(spark, lake, failed)
        except Exception:  # the original error is the one to report
            log.exception("batch run %s: could not record the failure", run.run_id)
        reason = str(error) if isinstance(error, WeirError) else _describe(error)
        raise WeirError(f"batch run {run.run_id} failed: {reason}") from error
    log.info(
        "batch run %s %s: mode=%s cutoff=%s horizon=%s raw_version=%s windows_written=%s",
        done.run_id,
        done.status,
        done.mode,
        _iso(done.cutoff),
        _iso(done.horizon),
        done.raw_version,
        done.windows_written,
    )
    return done


def _execute(
    spark: SparkSession,
    lake: LakeLayout,
    request: RebuildRequest,
    baseline: Optional[BatchRun],
    record: _RunRecord,
) -> BatchRun:
    """The run proper; fills in ``record`` as it goes, for a failure record."""
    run = record.run
    step = time.monotonic()
    if request.input is not None:
        adopt_files(spark, lake, request.input)
    version = raw_version(spark, lake)
    run = record.update(raw_version=version)
    raw = received_before(_snapshot(spark, lake.raw, version), request.cutoff)
    records_in = raw.count()
    if records_in == 0:
        raise WeirError(
            f"the raw table {lake.raw} (version {version}) holds no record ingested before "
            f"{_iso(request.cutoff)}: nothing to rebuild from"
        )
    log.info("batch: raw version %s, %s records before the cutoff", version, records_in)

    plan = _plan(spark, lake, request, baseline, version)
    run = record.update(
        mode=plan.mode,
        baseline_run_id=plan.baseline_run_id,
        changes_since=plan.changes_since,
        dates_rebuilt=None if plan.dates is None else list(plan.dates),
    )
    if plan.changes_since is not None and baseline is not None:
        index_current = _index_matches(spark, lake, baseline)
        unchanged = _unchanged_since(raw, plan.changes_since, records_in, baseline)
        if unchanged is not None:
            log.info("batch: no raw record new since run %s; view untouched", baseline.run_id)
            index_version = baseline.index_version if index_current else None
            return record.update(windows_written=0, index_version=index_version, **unchanged)
        if index_current:
            done = _incremental_from_index(spark, lake, raw, records_in, baseline, plan, record)
            if done is not None:
                return done

    if plan.mode in COMPLETE_MODES:
        # The index of every winner, for the next incremental run, written straight from the
        # dedup; the rest of the run reads it back. Cheaper than caching the winners (an
        # in-memory copy of all history, spilling to disk at scale) and reading the cache
        # twice: the index is columnar, partitioned by date, and read column-pruned.
        replace_event_index(
            event_index_rows(first_received_events(raw)), lake.batch_events, run.run_id, None
        )
        index_version = _run_commit(spark, lake.batch_events, run.run_id)[0]
        assert index_version is not None  # an overwrite of the whole table always commits
        record.update(index_version=index_version)
        winners = _snapshot(spark, lake.batch_events, index_version)
        return _view_from_winners(spark, lake, raw, records_in, winners, plan, record, step)
    # A range run reads the same history but leaves the index as the last complete run
    # wrote it: its winners, in the index's shape, are computed once and read twice.
    winners = event_index_rows(first_received_events(raw)).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return _view_from_winners(spark, lake, raw, records_in, winners, plan, record, step)
    finally:
        winners.unpersist()


def _view_from_winners(
    spark: SparkSession,
    lake: LakeLayout,
    raw: DataFrame,
    records_in: int,
    winners: DataFrame,
    plan: _Plan,
    record: _RunRecord,
    step: float,
) -> BatchRun:
    """The counts of a run that read all history, and its view rewrite, from its winners as
    event index rows (the index version just written, or a range run's own)."""
    totals = winners.agg(
        F.count(F.lit(1)).alias("distinct_events"),
        F.coalesce(F.sum(RECEIVED_COPIES), F.lit(0)).alias("valid"),
        F.count(F.when(F.size(CONTENT_FINGERPRINTS) > 1, True)).alias("conflicting"),
    ).first()
    valid = int(totals["valid"])
    run = record.update(
        records_in=records_in,
        valid=valid,
        quarantined=records_in - valid,
        duplicates=valid - int(totals["distinct_events"]),
        conflicting_duplicates=int(totals["conflicting"]),
    )
    log.info(
        "batch: %s valid (%s distinct events), %s quarantined, %.1fs",
        valid,
        totals["distinct_events"],
        records_in - valid,
        time.monotonic() - step,
    )
    if plan.changes_since is not None:
        plan = dataclasses.replace(plan, dates=_changed_dates(raw, winners, plan.changes_since))
        run = record.update(dates_rebuilt=list(plan.dates))
    if plan.dates is not None and not plan.dates:
        log.info("batch: nothing changed since run %s; view untouched", plan.baseline_run_id)
        return dataclasses.replace(run, windows_written=0)
    replace_minutes(
        minute_rows(winners, run.started_at, plan.dates), lake.batch, run.run_id, plan.dates
    )
    view_version, written = _run_commit(spark, lake.batch, run.run_id)
    log.info(
        "batch: %s windows written (%s dates) in view version %s, %.1fs",
        written,
        "all" if plan.dates is None else len(plan.dates),
        view_version,
        time.monotonic() - step,
    )
    return dataclasses.replace(run, windows_written=written, view_version=view_version)


# --- Incremental runs from the event index ------------------------------------------------------

# What identifies a winning copy: its place in the received order (the event's columns only
# break a tie between two streams' records with equal coordinates and ingest instant).
_RECEIVED_IDENTITY = ("ingest_time", "source", "source_partition", "source_offset")
# Delta operations that rewrite files without changing the rows (weir maintain).
_MAINTENANCE_OPERATIONS = ("OPTIMIZE", "VACUUM START", "VACUUM END")


def _index_matches(spark: SparkSession, lake: LakeLayout, baseline: BatchRun) -> bool:
    """Whether batch/events holds exactly the winners over the baseline's records: the
    baseline recorded the index version it left, and every commit since only compacted."""
    if baseline.index_version is None or not DeltaTable.isDeltaTable(spark, lake.batch_events):
        return False
    later = (
        DeltaTable.forPath(spark, lake.batch_events)
        .history()
        .where(F.col("version") > baseline.index_version)
        .select("operation")
        .collect()
    )
    return all(row["operation"] in _MAINTENANCE_OPERATIONS for row in later)


def records_new_since(
    raw: DataFrame, baseline_raw: DataFrame, since: datetime, baseline_cutoff: datetime
) -> DataFrame:
    """The records of ``raw`` (this run's snapshot, ``ingest_time < C``) that the baseline did
    not read: those ingested at or after its cutoff, and those ingested in [since, cutoff)
    that are missing from its snapshot ``baseline_raw`` (a micro-batch committed late).

    Every other record of ``raw`` has ``ingest_time < since``, so the baseline read it (see
    ``_changes_since``). Source coordinates identify a record: the archivers write each once.
    """
    received = F.col("ingest_time")
    new = raw.where((received >= F.lit(since)) & (F.col("ingest_date") >= F.lit(since.date())))
    if since >= baseline_cutoff:
        return new
    window = (received >= F.lit(since)) & (received < F.lit(baseline_cutoff))
    read_before = baseline_raw.where(window & (F.col("ingest_date") >= F.lit(since.date()))).select(
        *SOURCE_COORDINATES
    )
    return new.where(~window).unionByName(
        new.where(window).join(read_before, list(SOURCE_COORDINATES), "left_anti")
    )


def _incremental_from_index(
    spark: SparkSession,
    lake: LakeLayout,
    raw: DataFrame,
    records_in: int,
    baseline: BatchRun,
    plan: _Plan,
    record: _RunRecord,
) -> Optional[BatchRun]:
    """An incremental run that reads the new records and the index, not all history.

    The new records' valid copies are deduplicated among themselves, then folded into the
    index rows of the event_ids they touch (``merge_first_received``): the result is the
    winners over all records, as a full dedup would give them. The index is rewritten in the
    dates those rows leave or land on, then the view in the dates whose winners changed.
    Returns None (the caller scans all history instead) when the counts do not add up, e.g.
    rows were deleted from RAW since the baseline.
    """
    assert plan.changes_since is not None and baseline.raw_version is not None
    baseline_raw = received_before(
        _snapshot(spark, lake.raw, baseline.raw_version), baseline.cutoff
    )
    new = records_new_since(raw, baseline_raw, plan.changes_since, baseline.cutoff)
    classified = new.transform(classify_records).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counted = classified.agg(
            F.count(F.lit(1)).alias("records"),
            F.count(F.when(F.col(REASON_COLUMN).isNull(), True)).alias("valid"),
        ).first()
        if baseline.records_in is None or records_in != baseline.records_in + counted["records"]:
            log.info(
                "batch: %s records read, but the baseline's %s and %s new do not add up; "
                "scanning all history",
                records_in,
                baseline.records_in,
                counted["records"],
            )
            return None
        new_winners = (
            classified.transform(valid_events)
            .transform(first_received_with_contents)
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        try:
            return _fold_into_index(spark, lake, new_winners, baseline, counted, records_in, record)
        finally:
            new_winners.unpersist()
    finally:
        classified.unpersist()


def _fold_into_index(
    spark: SparkSession,
    lake: LakeLayout,
    new_winners: DataFrame,
    baseline: BatchRun,
    counted: Any,
    records_in: int,
    record: _RunRecord,
) -> BatchRun:
    """The fold, the index and view rewrites and the counts of ``_incremental_from_index``."""
    index_version = latest_table_version(spark, lake.batch_events)
    assert index_version is not None  # _index_matches found the table
    index = _snapshot(spark, lake.batch_events, index_version)
    touched = new_winners.select("event_id")
    # The old rows of the touched event_ids, from the event_id column of every date: a
    # conflicting twin can sit on any day. Small: the ids the new records name.
    old = (
        index.select(
            "event_id",
            F.col("event_date").alias("old_date"),
            *(F.col(c).alias(f"old_{c}") for c in _RECEIVED_IDENTITY),
            F.size(CONTENT_FINGERPRINTS).alias("old_contents"),
        )
        .join(touched, "event_id", "left_semi")
        .persist()
    )
    try:
        # One job for both date sets (each collect is a job, and on 2 cores a job's fixed
        # cost is most of what a day's worth of ids costs).
        dates = (
            old.agg(F.collect_set("old_date").alias("old"))
            .crossJoin(new_winners.agg(F.collect_set(event_date_of_event()).alias("new")))
            .first()
        )
        in_candidates = F.col("event_date").isin(sorted(set(dates["old"]) | set(dates["new"])))
        merged = (
            index.where(in_candidates)
            .join(touched, "event_id", "left_semi")
            .drop("event_date")
            .unionByName(new_winners)
            .transform(merge_first_received)
            .transform(event_index_rows)
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        try:
            compared = merged.join(old, "event_id", "left")
            same_winner = F.col("old_date").isNotNull()
            for name in _RECEIVED_IDENTITY:
                same_winner = same_winner & (F.col(name) == F.col(f"old_{name}"))
            changed = ~same_winner
            totals = compared.agg(
                F.collect_set(F.when(changed, F.col("event_date"))).alias("landed"),
                F.collect_set(F.when(changed, F.col("old_date"))).alias("left"),
                F.count(F.when(F.col("old_date").isNull(), True)).alias("new_events"),
                F.count(F.when(F.col("old_contents") > 1, True)).alias("was_conflicting"),
                F.count(F.when(F.size(CONTENT_FINGERPRINTS) > 1, True)).alias("conflicting"),
            ).first()
            view_dates = sorted(set(totals["landed"]) | set(totals["left"]))
            index_dates = sorted(set(view_dates) | set(dates["old"]))
            valid = baseline.valid + counted["valid"]
            distinct = baseline.valid - baseline.duplicates + totals["new_events"]
            run = record.update(
                records_in=records_in,
                valid=valid,
                quarantined=records_in - valid,
                duplicates=valid - distinct,
                conflicting_duplicates=baseline.conflicting_duplicates
                - totals["was_conflicting"]
                + totals["conflicting"],
                dates_rebuilt=view_dates,
            )
            if index_dates:
                kept = (
                    index.where(F.col("event_date").isin(index_dates))
                    .join(touched, "event_id", "left_anti")
                    .select(*BATCH_EVENTS_SCHEMA.fieldNames())
                )
                replace_event_index(
                    kept.unionByName(merged.select(*BATCH_EVENTS_SCHEMA.fieldNames())),
                    lake.batch_events,
                    run.run_id,
                    index_dates,
                )
        finally:
            merged.unpersist()
    finally:
        old.unpersist()
    written_index = _run_commit(spark, lake.batch_events, run.run_id)[0] if index_dates else None
    run = record.update(index_version=written_index or baseline.index_version)
    log.info(
        "batch: %s new records folded into the event index (%s dates); view dates %s",
        counted["records"],
        len(index_dates),
        [str(d) for d in view_dates],
    )
    if not view_dates:
        return dataclasses.replace(run, windows_written=0)
    events = (
        spark.read.format("delta")
        .load(lake.batch_events)
        .where(F.col("event_date").isin(view_dates))
    )
    replace_minutes(minute_rows(events, run.started_at), lake.batch, run.run_id, view_dates)
    view_version, written = _run_commit(spark, lake.batch, run.run_id)
    return dataclasses.replace(run, windows_written=written, view_version=view_version)
