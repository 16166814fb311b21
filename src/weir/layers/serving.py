"""The serving layer (DESIGN.md §6): the unified ``telemetry_minute`` table, merged incrementally.

The rule: BATCH rows with ``window_end <= H`` and SPEED rows with ``window_end > H``, where H is
the horizon of the latest successful complete batch run (``weir.control``); with no batch run
yet, H is minus infinity and every row comes from SPEED. ``layer`` says which.

A merge does not rebuild the table. It works out, from what changed since the previous merge
(recorded in ``_control/merge_runs``), the *scope* of rows whose published value can differ:

* the event dates whose BATCH rows changed (data-changing commits in BATCH's Delta log since
  the batch version the previous merge read);
* the windows that switch side because H moved: ``window_end`` in ``(H_prev, H]``;
* the SPEED rows beyond H on the event dates whose SPEED rows changed (SPEED's Delta log);
* the event dates someone else changed in the unified table itself (a repair, never Weir).

Inside the scope it diffs the wanted rows against the table and applies only the difference in
ONE Delta MERGE (inserts, updates, deletes; the target is pruned to the touched dates), so the
cost follows the change, not the history. Nothing changed: no commit at all. docs/serving.md
carries the argument that the result always equals a full rebuild.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Callable, Optional

from delta.exceptions import (
    ConcurrentAppendException,
    ConcurrentDeleteDeleteException,
    ConcurrentDeleteReadException,
    ConcurrentTransactionException,
    ConcurrentWriteException,
    DeltaConcurrentModificationException,
    MetadataChangedException,
    ProtocolChangedException,
)
from delta.tables import DeltaTable
from pyspark import StorageLevel
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    MapType,
    StringType,
    StructField,
    StructType,
)

from weir.config import WeirConfig
from weir.control import COMPLETE_MODES, latest_batch_run, portable_columns, utc_values
from weir.errors import WeirError
from weir.lake import LakeLayout, date_literals
from weir.layers.checkpoints import latest_table_version
from weir.schemas import (
    LAYER_BATCH,
    LAYER_SPEED,
    MERGE_RUN_SCHEMA,
    MINUTE_KEY,
    MINUTE_PARTITION_COLUMNS,
    MINUTE_SCHEMA,
)

log = logging.getLogger(__name__)

UTC = timezone.utc
RUN_SUCCEEDED = "succeeded"
RUN_FAILED = "failed"
SCOPE_FULL = "full"
SCOPE_INCREMENTAL = "incremental"
SCOPE_NONE = "none"

MERGE_ATTEMPTS = 5  # one try and four retries after conflicting commits
BACKOFF_SECONDS = 0.5  # doubled after each conflict, at most BACKOFF_MAX_SECONDS, plus jitter
BACKOFF_MAX_SECONDS = 8.0
# Past this many commits since the previous merge, a table's change log is not read file by
# file; its changes count as unknown (SPEED: every row beyond H; BATCH: everything).
MAX_LOG_VERSIONS = 2000

PARTITION_COLUMN = MINUTE_PARTITION_COLUMNS[0]
_DELETE = "_weir_delete"
_MINUTE = timedelta(minutes=1)
_MAX_ERROR_CHARS = 2000
_USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"

# Commit conflicts Delta raises when another writer committed first (docs/serving.md).
CONFLICTS: tuple[type[BaseException], ...] = (
    ConcurrentAppendException,
    ConcurrentDeleteReadException,
    ConcurrentDeleteDeleteException,
    ConcurrentTransactionException,
    ConcurrentWriteException,
    DeltaConcurrentModificationException,
    MetadataChangedException,
    ProtocolChangedException,
)


class ServingMovedError(Exception):
    """The unified table changed data between the diff and the commit: diff again (retried)."""


# --- The rule: a pure transform -----------------------------------------------------------------


def serving_rule(batch: DataFrame, speed: DataFrame, horizon: Optional[datetime]) -> DataFrame:
    """BATCH rows with ``window_end <= horizon`` ∪ SPEED rows with ``window_end > horizon``.

    ``horizon`` None (no batch run yet) is minus infinity: SPEED only. ``layer`` is set to the
    side each row comes from. Columns in ``MINUTE_SCHEMA`` order.
    """
    columns = [c for c in MINUTE_SCHEMA.fieldNames() if c != "layer"]

    def side(rows: DataFrame, layer: str) -> DataFrame:
        return rows.select(*columns, F.lit(layer).alias("layer")).select(
            *MINUTE_SCHEMA.fieldNames()
        )

    if horizon is None:
        return side(speed, LAYER_SPEED)
    cut = F.lit(horizon)
    return side(batch.where(F.col("window_end") <= cut), LAYER_BATCH).unionByName(
        side(speed.where(F.col("window_end") > cut), LAYER_SPEED)
    )


# --- What a merge must look at -----------------------------------------------------------------


def _floor_date(moment: datetime) -> date:
    """The event date of the earliest window whose ``window_end`` is after ``moment``."""
    return (moment - _MINUTE).astimezone(UTC).date()


def _in_dates(dates: Iterable[date], column: str = PARTITION_COLUMN) -> Column:
    return F.col(column).isin(sorted(set(dates)))


@dataclass(frozen=True)
class MergeScope:
    """The rows a merge re-derives; everything outside is unchanged since the previous merge.

    ``everything``: the whole table. Otherwise the union of: whole event ``dates``; the rows
    whose ``window_end`` is in ``switched = (low, high]`` (``low`` None: no lower bound), which
    change side because H moved; and the SPEED side beyond ``horizon`` on ``speed_dates``
    (None: on every date).
    """

    everything: bool
    horizon: Optional[datetime] = None
    dates: frozenset = frozenset()
    switched: Optional[tuple[Optional[datetime], datetime]] = None
    speed_dates: Optional[frozenset] = frozenset()

    @property
    def kind(self) -> str:
        if self.everything:
            return SCOPE_FULL
        return SCOPE_NONE if self.is_empty else SCOPE_INCREMENTAL

    @property
    def is_empty(self) -> bool:
        return (
            not self.everything
            and not self.dates
            and self.switched is None
            and self.speed_dates is not None
            and not self.speed_dates
        )

    def row_filter(self) -> Optional[Column]:
        """The exact rows in scope (None: all rows)."""
        if self.everything:
            return None
        parts: list[Column] = []
        if self.dates:
            parts.append(_in_dates(self.dates))
        if self.switched is not None:
            low, high = self.switched
            part = F.col("window_end") <= F.lit(high)
            if low is not None:
                part = part & (F.col("window_end") > F.lit(low))
            parts.append(part)
        if self.speed_dates is None or self.speed_dates:
            part = None if self.horizon is None else F.col("window_end") > F.lit(self.horizon)
            if self.speed_dates is not None:
                on_dates = _in_dates(self.speed_dates)
                part = on_dates if part is None else part & on_dates
            if part is None:
                return None  # every SPEED row on every date, and H is minus infinity
            parts.append(part)
        return _any(parts)

    def partition_filter(self) -> Optional[Column]:
        """A predicate on the partition column alone that contains the scope (for pruning)."""
        if self.everything:
            return None
        parts: list[Column] = []
        if self.dates:
            parts.append(_in_dates(self.dates))
        if self.switched is not None:
            low, high = self.switched
            part = F.col(PARTITION_COLUMN) <= F.lit(high.astimezone(UTC).date())
            if low is not None:
                part = part & (F.col(PARTITION_COLUMN) >= F.lit(_floor_date(low)))
            parts.append(part)
        if self.speed_dates is None or self.speed_dates:
            part = None
            if self.horizon is not None:
                part = F.col(PARTITION_COLUMN) >= F.lit(_floor_date(self.horizon))
            if self.speed_dates is not None:
                on_dates = _in_dates(self.speed_dates)
                part = on_dates if part is None else part & on_dates
            if part is None:
                return None
            parts.append(part)
        return _any(parts)

    def describe(self) -> str:
        if self.everything or self.is_empty:
            return self.kind
        pieces = []
        if self.dates:
            pieces.append(f"dates {date_literals(self.dates)}")
        if self.switched is not None:
            low, high = self.switched
            pieces.append(f"window_end in ({_iso(low) if low else '-inf'}, {_iso(high)}]")
        if self.speed_dates is None:
            pieces.append("speed beyond H on every date")
        elif self.speed_dates:
            pieces.append(f"speed beyond H on {date_literals(self.speed_dates)}")
        return "; ".join(pieces)


def _any(parts: list[Column]) -> Optional[Column]:
    if not parts:
        return F.lit(False)
    combined = parts[0]
    for part in parts[1:]:
        combined = combined | part
    return combined


def merge_scope(
    previous_horizon: Optional[datetime],
    horizon: Optional[datetime],
    batch_dates: Optional[frozenset],
    speed_dates: Optional[frozenset],
    serving_dates: Optional[frozenset],
    *,
    first_merge: bool = False,
) -> MergeScope:
    """The scope of a merge from what changed since the previous one (pure; tested).

    ``*_dates``: the event dates with data-changing commits in BATCH, SPEED and the unified
    table since the versions the previous merge read (None: unknown). ``first_merge`` (no
    previous merge recorded), unknown BATCH or unified-table changes: everything.
    """
    if first_merge or batch_dates is None or serving_dates is None:
        return MergeScope(everything=True, horizon=horizon)
    switched = None
    if previous_horizon != horizon:
        bounds = [moment for moment in (previous_horizon, horizon) if moment is not None]
        # One side None (minus infinity): everything up to the other switches side.
        low = min(bounds) if len(bounds) == 2 else None
        switched = (low, max(bounds))
    return MergeScope(
        everything=False,
        horizon=horizon,
        dates=frozenset(batch_dates) | frozenset(serving_dates),
        switched=switched,
        speed_dates=None if speed_dates is None else frozenset(speed_dates),
    )


# --- Reading Delta tables: versions and the partitions a span of commits changed ------------------

_LOG_FILE_ACTION = StructType(
    [
        StructField("path", StringType()),
        StructField("partitionValues", MapType(StringType(), StringType())),
        StructField("dataChange", BooleanType()),
    ]
)
_LOG_SCHEMA = StructType(
    [
        StructField("add", _LOG_FILE_ACTION),
        StructField("remove", _LOG_FILE_ACTION),
        StructField("metaData", StructType([StructField("id", StringType())])),
    ]
)


def changed_dates(
    spark: SparkSession,
    path: str,
    since_version: Optional[int],
    until_version: Optional[int],
    column: str = PARTITION_COLUMN,
    max_versions: int = MAX_LOG_VERSIONS,
) -> Optional[frozenset]:
    """The values of partition ``column`` where commits ``since_version`` (excluded) to
    ``until_version`` (included) added or removed data; None when that cannot be known.

    Reads only those commits' JSON files from ``_delta_log`` (Delta protocol: ``add`` and
    ``remove`` actions carry ``partitionValues`` and ``dataChange``). Rearrangements that change
    no data (OPTIMIZE: ``dataChange=false``) are not changes. Unknown (None): the table is new
    or gone, was re-created (version went back), its metadata changed, a commit file has left
    the log, or there are more than ``max_versions`` commits to read.
    """
    if until_version is None:
        return frozenset() if since_version is None else None
    if since_version is None or since_version > until_version:
        return None
    if since_version == until_version:
        return frozenset()
    if until_version - since_version > max_versions:
        return None
    log_dir = path.rstrip("/") + "/_delta_log"
    files = [f"{log_dir}/{v:020d}.json" for v in range(since_version + 1, until_version + 1)]
    try:
        actions = spark.read.schema(_LOG_SCHEMA).json(files)
        data_changes = actions.select(F.col("add").alias("a")).unionByName(
            actions.select(F.col("remove").alias("a"))
        )
        data_changes = data_changes.where(
            F.col("a").isNotNull() & F.coalesce(F.col("a.dataChange"), F.lit(True))
        ).select(
            F.lit(False).alias("metadata"),
            F.col("a.partitionValues").getItem(column).alias("value"),
        )
        metadata = actions.where(F.col("metaData").isNotNull()).select(
            F.lit(True).alias("metadata"), F.lit(None).cast("string").alias("value")
        )
        # One pass over the commit files for both questions.
        summary = data_changes.unionByName(metadata).distinct().collect()
    except AnalysisException as error:
        log.info(
            "serving: cannot read %s commits %s..%s: %s",
            path,
            since_version + 1,
            until_version,
            str(error).splitlines()[0],
        )
        return None
    values = [row["value"] for row in summary]
    if any(row["metadata"] for row in summary) or any(value is None for value in values):
        return None
    return frozenset(date.fromisoformat(value) for value in values)


def _read_version(spark: SparkSession, path: str, version: Optional[int]) -> DataFrame:
    if version is None:
        return spark.createDataFrame([], MINUTE_SCHEMA)
    rows = spark.read.format("delta").option("versionAsOf", version).load(path)
    return rows.select(*MINUTE_SCHEMA.fieldNames())


def ensure_serving_table(spark: SparkSession, path: str) -> None:
    """Create the unified table (MINUTE_SCHEMA, partitioned by event_date) unless it exists.

    An empty append, not ``CREATE TABLE``: a path-based write never opens the metastore.
    """
    if DeltaTable.isDeltaTable(spark, path):
        return
    spark.createDataFrame([], MINUTE_SCHEMA).write.format("delta").mode("append").partitionBy(
        *MINUTE_PARTITION_COLUMNS
    ).save(path)


# --- The diff and the one commit ---------------------------------------------------------------


def serving_changes(wanted: DataFrame, current: DataFrame) -> DataFrame:
    """Rows to upsert (wanted, not present exactly) and keys to delete (present, not wanted).

    Output: MINUTE_SCHEMA plus a boolean ``_weir_delete``; a delete row carries only the key
    and ``event_date``. Both inputs must be restricted to the same scope, one row per key.

    One full outer join on the window key, values compared null-safely: a single shuffle of
    each side, where two set differences (rows, then keys) cost two.
    """
    key = [*MINUTE_KEY, PARTITION_COLUMN]
    values = [c for c in MINUTE_SCHEMA.fieldNames() if c not in key]
    present = "_weir_present"
    joined = (
        wanted.withColumn(present, F.lit(True))
        .alias("w")
        .join(current.withColumn(present, F.lit(True)).alias("c"), on=key, how="full_outer")
    )
    in_wanted = F.col(f"w.{present}").isNotNull()
    in_current = F.col(f"c.{present}").isNotNull()
    same = F.lit(True)
    for column in values:
        same = same & F.col(f"w.{column}").eqNullSafe(F.col(f"c.{column}"))
    delete = in_current & ~in_wanted
    return joined.where(delete | (in_wanted & ~(in_current & same))).select(
        *(
            F.col(c) if c in key else F.col(f"w.{c}")  # all null on a delete row
            for c in MINUTE_SCHEMA.fieldNames()
        ),
        delete.alias(_DELETE),
    )


def apply_changes(
    spark: SparkSession, path: str, changes: DataFrame, dates: Iterable[date], run_id: str
) -> None:
    """ONE Delta MERGE into the unified table: delete, update, insert by window key.

    The target is pruned to ``dates`` (the partitions that hold a change), so only files with
    a changed row are rewritten and only those partitions are read (a concurrent OPTIMIZE of
    other dates does not conflict). The commit's ``userMetadata`` is ``run_id``.
    """
    condition = " AND ".join(
        [
            *(f"t.{c} = s.{c}" for c in MINUTE_KEY),
            f"t.{PARTITION_COLUMN} IN ({date_literals(dates)})",
        ]
    )
    values = {c: f"s.{c}" for c in MINUTE_SCHEMA.fieldNames()}
    previous = spark.conf.get(_USER_METADATA_CONF, None)
    spark.conf.set(_USER_METADATA_CONF, run_id)
    try:
        (
            DeltaTable.forPath(spark, path)
            .alias("t")
            .merge(changes.alias("s"), condition)
            .whenMatchedDelete(condition=f"s.{_DELETE}")
            .whenMatchedUpdate(set=values)
            .whenNotMatchedInsert(condition=f"NOT s.{_DELETE}", values=values)
            .execute()
        )
    finally:
        if previous is None:
            spark.conf.unset(_USER_METADATA_CONF)
        else:
            spark.conf.set(_USER_METADATA_CONF, previous)


# --- _control/merge_runs -----------------------------------------------------------------------


@dataclass(frozen=True)
class MergeRun:
    """One row of ``_control/merge_runs``; field for field ``MERGE_RUN_SCHEMA`` (tested)."""

    run_id: str
    status: str
    started_at: datetime
    scope: Optional[str] = None
    previous_run_id: Optional[str] = None
    horizon: Optional[datetime] = None
    batch_run_id: Optional[str] = None
    batch_version: Optional[int] = None
    speed_version: Optional[int] = None
    serving_version: Optional[int] = None
    partitions_replaced: Optional[list] = None
    rows_written: Optional[int] = None
    rows_deleted: Optional[int] = None
    files_added: Optional[int] = None
    files_removed: Optional[int] = None
    attempts: Optional[int] = None
    finished_at: Optional[datetime] = None
    error: Optional[str] = None

    def as_row(self) -> tuple:
        """The values in ``MERGE_RUN_SCHEMA`` order, for ``spark.createDataFrame``."""
        return tuple(getattr(self, name) for name in MERGE_RUN_SCHEMA.fieldNames())

    @property
    def committed(self) -> bool:
        """Whether this run changed the unified table (made a commit)."""
        return bool(self.partitions_replaced)


def record_merge_run(spark: SparkSession, lake: LakeLayout, run: MergeRun) -> None:
    """Append one run record (a blind append: never conflicts); creates the table."""
    spark.createDataFrame([run.as_row()], MERGE_RUN_SCHEMA).write.format("delta").mode(
        "append"
    ).option("mergeSchema", "true").save(lake.merge_runs)


def merge_runs(spark: SparkSession, lake: LakeLayout) -> list[MergeRun]:
    """Every recorded merge, oldest first (timestamps as aware UTC datetimes)."""
    if not DeltaTable.isDeltaTable(spark, lake.merge_runs):
        return []
    runs = spark.read.format("delta").load(lake.merge_runs)
    ordered = runs.orderBy("started_at", "run_id").select(
        *portable_columns(MERGE_RUN_SCHEMA, runs.columns)
    )
    return [_run_from_row(row.asDict()) for row in ordered.collect()]


def latest_merge_run(spark: SparkSession, lake: LakeLayout) -> Optional[MergeRun]:
    """The successful merge that finished last: the baseline of the next merge."""
    if not DeltaTable.isDeltaTable(spark, lake.merge_runs):
        return None
    runs = spark.read.format("delta").load(lake.merge_runs)
    latest = runs.where(F.col("status") == RUN_SUCCEEDED).orderBy(
        F.col("finished_at").desc(), F.col("started_at").desc()
    )
    row = latest.select(*portable_columns(MERGE_RUN_SCHEMA, runs.columns)).first()
    return None if row is None else _run_from_row(row.asDict())


def _run_from_row(values: dict) -> MergeRun:
    return MergeRun(**utc_values(MERGE_RUN_SCHEMA, values))


# --- The run -----------------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _describe(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:_MAX_ERROR_CHARS]


def _backoff(attempt: int) -> float:
    base = min(BACKOFF_SECONDS * 2 ** (attempt - 1), BACKOFF_MAX_SECONDS)
    return base * (1 + random.random() / 2)  # jitter: two retrying writers drift apart


def _merge_commit(spark: SparkSession, path: str, run_id: str) -> tuple[int, int, dict]:
    """(version, read version, operationMetrics) of the commit tagged with ``run_id``."""
    history = DeltaTable.forPath(spark, path).history(20)
    row = history.where(F.col("userMetadata") == run_id).first()
    if row is None:
        raise WeirError(f"merge {run_id}: its commit is missing from the history of {path}")
    version = int(row["version"])
    read_version = version - 1 if row["readVersion"] is None else int(row["readVersion"])
    return version, read_version, dict(row["operationMetrics"] or {})


def _metric(metrics: dict, name: str) -> int:
    return int(metrics.get(name, "0") or 0)


def _check_unmoved(spark: SparkSession, path: str, diffed: int, now: int) -> None:
    """Raise :class:`ServingMovedError` if data changed in ``path`` after version ``diffed``."""
    moved = changed_dates(spark, path, diffed, now)
    if moved is None or moved:
        raise ServingMovedError(f"{path} changed data after version {diffed} (now {now})")


def _merge_once(
    spark: SparkSession, lake: LakeLayout, run: MergeRun, previous: Optional[MergeRun]
) -> MergeRun:
    """One attempt: pin the inputs, work out the scope, diff, commit at most once."""
    step = time.monotonic()
    ensure_serving_table(spark, lake.serving)
    # Independent small reads, each mostly Delta and Py4J round trips: side by side, they cost
    # the slowest one instead of the sum (a merge's fixed cost is freshness lost, docs/serving.md).
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="weir-merge-pin") as pool:
        batch_run_read = pool.submit(latest_batch_run, spark, lake, COMPLETE_MODES)
        versions = pool.map(
            lambda path: latest_table_version(spark, path), (lake.batch, lake.speed, lake.serving)
        )
        batch_version, speed_version, serving_version = versions
        batch_run = batch_run_read.result()
    horizon = None if batch_run is None else batch_run.horizon
    run = dataclasses.replace(
        run,
        previous_run_id=None if previous is None else previous.run_id,
        horizon=horizon,
        batch_run_id=None if batch_run is None else batch_run.run_id,
        batch_version=batch_version,
        speed_version=speed_version,
        serving_version=serving_version,
    )
    if previous is None:
        scope = merge_scope(None, horizon, None, None, None, first_merge=True)
    else:
        spans = (
            (lake.batch, previous.batch_version, batch_version),
            (lake.speed, previous.speed_version, speed_version),
            (lake.serving, previous.serving_version, serving_version),
        )
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="weir-merge-log") as pool:
            batch_dates, speed_dates, serving_dates = pool.map(
                lambda span: changed_dates(spark, *span), spans
            )
        scope = merge_scope(previous.horizon, horizon, batch_dates, speed_dates, serving_dates)
    log.info(
        "merge %s: H=%s batch v%s speed v%s serving v%s; scope: %s (%.1fs)",
        run.run_id,
        "none (speed only)" if horizon is None else _iso(horizon),
        batch_version,
        speed_version,
        serving_version,
        scope.describe(),
        time.monotonic() - step,
    )
    run = dataclasses.replace(run, scope=scope.kind, partitions_replaced=[])
    if scope.is_empty:
        return dataclasses.replace(run, rows_written=0, rows_deleted=0)

    wanted = serving_rule(
        _read_version(spark, lake.batch, batch_version),
        _read_version(spark, lake.speed, speed_version),
        horizon,
    )
    current = _read_version(spark, lake.serving, serving_version)
    for restriction in (scope.partition_filter(), scope.row_filter()):
        if restriction is not None:
            wanted, current = wanted.where(restriction), current.where(restriction)
    changes = serving_changes(wanted, current).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = changes.groupBy(PARTITION_COLUMN).count().collect()
        dates = sorted(row[PARTITION_COLUMN] for row in counts)
        log.info(
            "merge %s: %s changed rows on %s dates (%.1fs)",
            run.run_id,
            sum(row["count"] for row in counts),
            len(dates),
            time.monotonic() - step,
        )
        if not dates:
            return dataclasses.replace(run, rows_written=0, rows_deleted=0)
        _check_unmoved(
            spark, lake.serving, serving_version, latest_table_version(spark, lake.serving)
        )
        apply_changes(spark, lake.serving, changes, dates, run.run_id)
    finally:
        changes.unpersist()
    version, read_version, metrics = _merge_commit(spark, lake.serving, run.run_id)
    # A data change that landed between the diff and the MERGE's own snapshot is invisible to
    # Delta's conflict check (it committed before the MERGE began): diff again. The next
    # attempt keeps the previous merge as baseline, so its scope covers that change and ours.
    _check_unmoved(spark, lake.serving, serving_version, read_version)
    log.info(
        "merge %s: committed serving v%s (%s) in %.1fs",
        run.run_id,
        version,
        ", ".join(f"{k}={v}" for k, v in sorted(metrics.items()) if k.startswith("numTarget")),
        time.monotonic() - step,
    )
    return dataclasses.replace(
        run,
        serving_version=version,
        partitions_replaced=dates,
        rows_written=_metric(metrics, "numTargetRowsInserted")
        + _metric(metrics, "numTargetRowsUpdated"),
        rows_deleted=_metric(metrics, "numTargetRowsDeleted"),
        files_added=_metric(metrics, "numTargetFilesAdded"),
        files_removed=_metric(metrics, "numTargetFilesRemoved"),
    )


def run_merge(
    spark: SparkSession,
    config: WeirConfig,
    clock: Callable[[], datetime] = _utc_now,
    sleep: Callable[[float], None] = time.sleep,
    attempts: int = MERGE_ATTEMPTS,
    baseline: Optional[MergeRun] = None,
) -> MergeRun:
    """Publish the unified table: BATCH (window_end <= H) ∪ SPEED (window_end > H).

    Atomic (one Delta commit, or none when nothing changed) and idempotent (the same inputs
    give the same rows and no commit). Safe beside a running stream: BATCH and SPEED are read
    at pinned versions. A conflicting commit on the unified table (``weir maintain``, a second
    merge) is retried up to ``attempts`` times with growing back-off. The run is recorded in
    ``_control/merge_runs``; a failure raises :class:`WeirError` after recording it.

    ``baseline``: the previous successful merge when the caller already holds it (the merge
    loop passes the run it made last), saving a read of ``_control/merge_runs``; None reads
    it. A baseline older than the latest merge is still correct, only wider: the changes since
    it include the later merge's commit, which the scope then covers as a foreign change.
    """
    lake = LakeLayout.from_config(config)
    started = clock()
    run = MergeRun(
        run_id=f"merge-{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}",
        status=RUN_FAILED,
        started_at=started,
    )
    attempt = 0
    try:
        while True:
            attempt += 1
            try:
                previous = baseline if baseline is not None else latest_merge_run(spark, lake)
                done = _merge_once(spark, lake, run, previous)
                break
            except (*CONFLICTS, ServingMovedError) as error:
                if attempt >= attempts:
                    raise WeirError(
                        f"merge {run.run_id}: lost {attempt} times to concurrent commits on "
                        f"{lake.serving} ({_describe(error)}); is another merge or "
                        "`weir maintain` running? Try again when it has finished."
                    ) from error
                pause = _backoff(attempt)
                log.warning(
                    "merge %s: attempt %s lost to a concurrent commit (%s); retrying in %.1fs",
                    run.run_id,
                    attempt,
                    _describe(error),
                    pause,
                )
                sleep(pause)
        done = dataclasses.replace(
            done, status=RUN_SUCCEEDED, attempts=attempt, finished_at=clock()
        )
        record_merge_run(spark, lake, done)
    except Exception as error:
        failed = dataclasses.replace(
            run, attempts=attempt, finished_at=clock(), error=_describe(error)
        )
        try:
            record_merge_run(spark, lake, failed)
        except Exception:  # the original error is the one to report
            log.exception("merge %s: could not record the failure", run.run_id)
        if isinstance(error, WeirError):
            raise
        raise WeirError(f"merge {run.run_id} failed: {_describe(error)}") from error
    log.info(
        "merge %s %s: scope=%s H=%s rows_written=%s rows_deleted=%s partitions=%s attempts=%s",
        done.run_id,
        done.status,
        done.scope,
        "none" if done.horizon is None else _iso(done.horizon),
        done.rows_written,
        done.rows_deleted,
        len(done.partitions_replaced or []),
        done.attempts,
    )
    return done


__all__ = [
    "CONFLICTS",
    "MergeRun",
    "MergeScope",
    "apply_changes",
    "changed_dates",
    "ensure_serving_table",
    "latest_merge_run",
    "merge_runs",
    "merge_scope",
    "record_merge_run",
    "run_merge",
    "serving_changes",
    "serving_rule",
]
