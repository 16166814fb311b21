"""Delta Lake plumbing every layer shares, written once.

What a writer needs beyond ``df.write.format("delta")``: the table's version (without the
stale-cache trap of ``isDeltaTable``), a pinned snapshot, create-if-absent by path, the
idempotent append keyed by ``txnAppId``/``txnVersion`` and the cheaper marked append whose
writer checks once, the writes a table has recorded, the atomic replace of some partitions,
the commit a writer tagged with its run id, the partitions a span of commits changed (read
from ``_delta_log``), and bounded retries of a write that lost to a concurrent commit.

Everything is path based, never through a catalog: a path-based read or write does not open
the metastore, which locally is an embedded Derby database one process at a time can hold.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from typing import Callable, Optional, TypeVar

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
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, MapType, StringType, StructField, StructType

from weir.errors import WeirError, describe_error

log = logging.getLogger(__name__)

T = TypeVar("T")

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
BACKOFF_SECONDS = 0.5  # doubled after each conflict, at most BACKOFF_MAX_SECONDS, plus jitter
BACKOFF_MAX_SECONDS = 8.0
# How many recent commits `tagged_commit` searches for a writer's tag.
TAG_SEARCH_DEPTH = 20
# Past this many commits, `changed_partitions` does not read the log file by file: unknown.
MAX_LOG_VERSIONS = 2000

_USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
_TXN_SCHEMA = "txn STRUCT<appId: STRING, version: BIGINT>"
_MARK_SCHEMA = "weir_writer STRING, batch BIGINT"
# The newest commits `committed_transactions` reads marks from first (then 10x more, ...).
MARK_PAGE = 100
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


def _log_dir(path: str) -> str:
    return f"{path.rstrip('/')}/_delta_log"


def path_missing(error: AnalysisException) -> bool:
    """Whether Spark refused a read because nothing exists at the path."""
    return "PATH_NOT_FOUND" in str(error) or "Path does not exist" in str(error)


def _not_a_delta_table(error: AnalysisException) -> bool:
    text = str(error)
    # No _delta_log; a _delta_log without a commit yet (another process is creating it).
    return any(
        mark in text
        for mark in ("DELTA_MISSING_DELTA_TABLE", "is not a Delta table", "DELTA_TABLE_NOT_FOUND")
    )


# --- Reading ------------------------------------------------------------------------------------


def table_version(spark: SparkSession, path: str) -> Optional[int]:
    """The latest version of the Delta table at ``path``; None while there is none.

    Not ``DeltaTable.isDeltaTable``: a JVM that once looked at a table between the creation of
    its ``_delta_log`` folder and its first commit (another process creating it) keeps
    answering False from its cached log. ``forPath`` refreshes the log.
    """
    from delta.tables import DeltaTable

    try:
        latest = DeltaTable.forPath(spark, path).history(1).select("version").first()
    except AnalysisException as error:
        if _not_a_delta_table(error) or path_missing(error):
            return None
        raise
    return None if latest is None else int(latest[0])


def read_snapshot(spark: SparkSession, path: str, version: int) -> DataFrame:
    """The table at ``path`` as of ``version``: what a run reads, whatever commits follow."""
    return spark.read.format("delta").option("versionAsOf", version).load(path)


def read_table(spark: SparkSession, path: str) -> Optional[DataFrame]:
    """The latest snapshot of the table at ``path``; None when there is no table.

    Loading refreshes the table's log, so unlike ``isDeltaTable`` a table another process
    created since this JVM last looked is found.
    """
    try:
        return spark.read.format("delta").load(path)
    except AnalysisException as error:
        if _not_a_delta_table(error) or path_missing(error):
            return None
        raise


def committed_transactions(
    spark: SparkSession, path: str, until_found: Collection[str] = ()
) -> dict[str, int]:
    """The latest version per writer of a Delta table's exactly-once writes ({} if no table).

    Two kinds of write count: Delta's idempotent writes (``txn`` actions, :func:`append_once`),
    read the way Delta builds a snapshot (the last checkpoint plus every JSON commit after it);
    and appends carrying a writer's commit mark (:func:`append_marked`), read from the
    ``userMetadata`` of the commits the log still holds, newest first. ``until_found``: stop
    reading marks once every one of these writers was found (a writer's latest mark is its
    newest); empty, the whole available history is read.
    """
    latest = table_version(spark, path)
    if latest is None:
        return {}
    transactions = _txn_versions(spark, path, latest)
    for writer, batch in _marked_batches(spark, path, latest, until_found).items():
        transactions[writer] = max(transactions.get(writer, -1), batch)
    return transactions


def _txn_versions(spark: SparkSession, path: str, latest: int) -> dict[str, int]:
    """The highest ``txn.version`` per app id, from the last checkpoint and later commits."""
    log_dir = _log_dir(path)
    sources = []
    checkpoint_version = -1
    last = _last_checkpoint(spark, log_dir)
    if last.get("version") is not None and last["version"] <= latest:
        if last.get("v2Checkpoint") is not None:
            raise WeirError(
                f"{path} uses Delta V2 checkpoints, which Weir's transaction reader does not "
                "read; Weir's tables are created without them"
            )
        checkpoint_version = int(last["version"])
        parts = int(last.get("parts") or 0)
        names = (
            [f"{checkpoint_version:020d}.checkpoint.parquet"]
            if parts == 0
            else [
                f"{checkpoint_version:020d}.checkpoint.{part:010d}.{parts:010d}.parquet"
                for part in range(1, parts + 1)
            ]
        )
        sources.append(spark.read.schema(_TXN_SCHEMA).parquet(*(f"{log_dir}/{n}" for n in names)))
    commits = [f"{log_dir}/{v:020d}.json" for v in range(checkpoint_version + 1, latest + 1)]
    if commits:
        sources.append(spark.read.schema(_TXN_SCHEMA).json(commits))
    transactions: dict[str, int] = {}
    for frame in sources:
        rows = (
            frame.where(F.col("txn").isNotNull())
            .groupBy(F.col("txn.appId").alias("app_id"))
            .agg(F.max("txn.version").alias("version"))
            .collect()
        )
        for row in rows:
            transactions[row["app_id"]] = max(transactions.get(row["app_id"], -1), row["version"])
    return transactions


def _last_checkpoint(spark: SparkSession, log_dir: str) -> dict:
    """The ``_last_checkpoint`` file of a Delta log as a dict ({} when there is none).

    Read through Hadoop's file system, not a Spark reader: Spark's file sources skip names
    starting with ``_``, even when given explicitly, and would read nothing.
    """
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(f"{log_dir}/_last_checkpoint")
    fs = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(hadoop_path):
        return {}
    stream = fs.open(hadoop_path)
    try:
        text = jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()
    return json.loads(text)


def _marked_batches(
    spark: SparkSession,
    path: str,
    latest: int,
    until_found: Collection[str],
) -> dict[str, int]:
    """The highest batch per writer in the commit marks of the table's available history.

    Pages through the history newest first (MARK_PAGE commits, then ten times more each
    time) and stops when every writer of ``until_found`` has a mark, or the history ends.
    """
    from delta.tables import DeltaTable

    table = DeltaTable.forPath(spark, path)
    limit = MARK_PAGE
    while True:
        page = table.history(limit)
        rows = (
            page.select(F.from_json("userMetadata", _MARK_SCHEMA).alias("mark"))
            .where(F.col("mark.weir_writer").isNotNull() & F.col("mark.batch").isNotNull())
            .groupBy(F.col("mark.weir_writer").alias("writer"))
            .agg(F.max("mark.batch").alias("batch"))
            .collect()
        )
        marks = {row["writer"]: int(row["batch"]) for row in rows}
        exhausted = limit > latest  # versions 0..latest: the page held every commit left
        if exhausted or (until_found and all(writer in marks for writer in until_found)):
            return marks
        limit *= 10


def writer_mark(writer: str, batch: int) -> str:
    """The ``userMetadata`` of a marked append: which writer committed which batch."""
    return json.dumps({"weir_writer": writer, "batch": batch})


def changed_partitions(
    spark: SparkSession,
    path: str,
    since_version: Optional[int],
    until_version: Optional[int],
    column: str,
    max_versions: int = MAX_LOG_VERSIONS,
) -> Optional[frozenset[str]]:
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
    log_dir = _log_dir(path)
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
            "cannot read %s commits %s..%s: %s",
            path,
            since_version + 1,
            until_version,
            str(error).splitlines()[0],
        )
        return None
    values = [row["value"] for row in summary]
    if any(row["metadata"] for row in summary) or any(value is None for value in values):
        return None
    return frozenset(values)


@dataclass(frozen=True)
class Commit:
    """A commit a writer tagged with its run id (``userMetadata``), from the table's history."""

    version: int
    read_version: int  # the snapshot the commit was made against
    metrics: Mapping[str, str]  # Delta's operationMetrics

    def metric(self, name: str) -> int:
        return int(self.metrics.get(name, "0") or 0)


def tagged_commit(spark: SparkSession, path: str, tag: str) -> Optional[Commit]:
    """The recent commit of ``path`` whose ``userMetadata`` is ``tag``; None if none.

    None also means "no commit at all": Delta skips a replaceWhere that neither adds nor
    removes a file, and a MERGE with nothing to change.
    """
    from delta.tables import DeltaTable

    if table_version(spark, path) is None:
        return None
    history = DeltaTable.forPath(spark, path).history(TAG_SEARCH_DEPTH)
    row = history.where(F.col("userMetadata") == tag).first()
    if row is None:
        return None
    version = int(row["version"])
    read_version = version - 1 if row["readVersion"] is None else int(row["readVersion"])
    return Commit(version, read_version, MappingProxyType(dict(row["operationMetrics"] or {})))


# --- Writing ------------------------------------------------------------------------------------


def ensure_table(
    spark: SparkSession,
    path: str,
    schema: StructType,
    partition_columns: tuple[str, ...],
    properties: Mapping[str, str] = MappingProxyType({}),
) -> None:
    """Create an empty Delta table at ``path`` unless one exists (schema and partitioning); an
    existing table gains the nullable columns of ``schema`` it lacks, at its end.

    Path-based on purpose: ``DeltaTable.createIfNotExists`` resolves ``delta.`path``` through
    the session catalog, which locally boots the embedded Derby metastore and holds it for the
    life of the process, so `weir catalog sync` or a notebook could not open it meanwhile.
    Delta records a DataFrame write's columns as nullable; the writers keep the required ones
    filled. ``ignore`` makes a concurrent creator's table win.
    """
    if table_version(spark, path) is not None:
        add_missing_columns(spark, path, schema, partition_columns)
        return
    (
        spark.createDataFrame([], schema)
        .write.format("delta")
        .mode("ignore")
        .options(**properties)
        .partitionBy(*partition_columns)
        .save(path)
    )


def add_missing_columns(
    spark: SparkSession, path: str, schema: StructType, partition_columns: tuple[str, ...]
) -> list[str]:
    """Add to the table at ``path`` the columns of ``schema`` it lacks; their names.

    For a schema that grew by nullable columns at its end (docs/contract.md: RAW's
    ``payload_bytes``): one commit that changes only the table's schema, an empty append with
    ``mergeSchema``, so every writer of the new schema finds the table ready. Idempotent; a
    concurrent writer doing the same makes the second commit a no-op or a conflict that a
    rerun settles. A missing column that is not nullable is an error: old rows have no value.
    """
    existing = set(spark.read.format("delta").load(path).schema.fieldNames())
    missing = [f for f in schema.fields if f.name not in existing]
    if not missing:
        return []
    required = [f.name for f in missing if not f.nullable]
    if required:
        raise WeirError(
            f"{path} lacks the required column(s) {', '.join(required)}: a table written "
            "before them cannot be upgraded in place"
        )
    (
        spark.createDataFrame([], schema)
        .write.format("delta")
        .mode("append")
        .option("mergeSchema", "true")
        .partitionBy(*partition_columns)
        .save(path)
    )
    names = [f.name for f in missing]
    log.info("%s: added the column(s) %s", path, ", ".join(names))
    return names


def append_once(
    rows: DataFrame,
    path: str,
    partition_columns: tuple[str, ...],
    app_id: str,
    version: int,
    user_metadata: Optional[str] = None,
) -> None:
    """Append ``rows`` once per (``app_id``, ``version``): idempotent.

    Delta skips the write, without an error, when the table already holds a commit of that
    app id with a version at least this one; so a replayed micro-batch or round is not
    appended twice. Two writers must never share an app id (docs/streaming.md).
    """
    writer = (
        rows.write.format("delta")
        .mode("append")
        .option("txnAppId", app_id)
        .option("txnVersion", version)
    )
    if user_metadata is not None:
        writer = writer.option("userMetadata", user_metadata)
    writer.partitionBy(*partition_columns).save(path)


def append_marked(
    rows: DataFrame,
    path: str,
    partition_columns: tuple[str, ...],
    writer: str,
    batch: int,
) -> None:
    """Append ``rows`` with a commit mark saying ``writer`` committed ``batch``; unchecked.

    A plain append (one Spark job and a blind commit), not an idempotent one: Delta's
    ``txnAppId`` check rebuilds the table's state on every write (docs/streaming.md, "The
    transaction check"). The caller decides whether ``batch`` is new, from
    :func:`committed_transactions` read once when it starts, and must be the only writer
    using ``writer``.
    """
    (
        rows.write.format("delta")
        .mode("append")
        .option("userMetadata", writer_mark(writer, batch))
        .partitionBy(*partition_columns)
        .save(path)
    )


def replace_partitions(
    frame: DataFrame,
    path: str,
    partition_columns: tuple[str, ...],
    where: Optional[str],
    tag: str,
    properties: Mapping[str, str] = MappingProxyType({}),
) -> None:
    """Replace the rows matching ``where`` (all rows when None) with ``frame``, atomically.

    One Delta commit tagged ``tag`` (find it with :func:`tagged_commit`); Delta rejects a row
    of ``frame`` outside ``where``. ``properties`` (``delta.*``) apply when the write creates
    the table and leave an existing table's properties as they are. Idempotent.
    """
    writer = (
        frame.write.format("delta")
        .mode("overwrite")
        .options(**properties)
        .option("userMetadata", tag)
        .partitionBy(*partition_columns)
    )
    if where is not None:
        writer = writer.option("replaceWhere", where)
    writer.save(path)


@contextmanager
def commit_tag(spark: SparkSession, tag: str) -> Iterator[None]:
    """Tag the DML commits (MERGE, UPDATE, DELETE) made inside with ``tag`` as userMetadata.

    DML takes no writer options, so the tag goes through the session's commitInfo setting,
    restored afterwards. Session-wide: commits made by other threads meanwhile carry it too.
    """
    previous = spark.conf.get(_USER_METADATA_CONF, None)
    spark.conf.set(_USER_METADATA_CONF, tag)
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(_USER_METADATA_CONF)
        else:
            spark.conf.set(_USER_METADATA_CONF, previous)


def date_literals(dates: Iterable[date]) -> str:
    """SQL date literals, sorted and distinct (``DATE'2026-03-01', …``)."""
    return ", ".join(f"DATE'{day.isoformat()}'" for day in sorted(set(dates)))


def dates_predicate(column: str, dates: Iterable[date]) -> str:
    """``column IN (DATE'…', …)`` for replaceWhere and MERGE conditions: Delta prunes files
    only by literal predicates on the partition column."""
    return f"{column} IN ({date_literals(dates)})"


# --- Concurrent writers -------------------------------------------------------------------------


def backoff_seconds(attempt: int) -> float:
    """The pause after the ``attempt``-th lost commit: doubling, capped, with jitter, so two
    retrying writers drift apart."""
    base = min(BACKOFF_SECONDS * 2 ** (attempt - 1), BACKOFF_MAX_SECONDS)
    return base * (1 + random.random() / 2)


class ConflictsOutlastedError(WeirError):
    """A write lost to concurrent commits more times than it may retry."""


def retry_conflicts(
    action: Callable[[], T],
    *,
    attempts: int,
    what: str,
    hint: str,
    retry_on: tuple[type[BaseException], ...] = CONFLICTS,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[T, int]:
    """Run ``action``; after a conflicting commit (``retry_on``), back off and run it again.

    Returns its result and the attempts it took. After ``attempts`` lost attempts raises
    :class:`ConflictsOutlastedError` naming ``what`` and saying ``hint`` (what to do).
    ``action`` must be safe to repeat: it re-reads what it needs (a lost Delta commit wrote
    nothing).
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return action(), attempt
        except retry_on as error:
            if attempt >= attempts:
                raise ConflictsOutlastedError(
                    f"{what}: lost {attempt} times to concurrent commits "
                    f"({describe_error(error)}); {hint}"
                ) from error
            pause = backoff_seconds(attempt)
            log.warning(
                "%s: attempt %s lost to a concurrent commit (%s); retrying in %.1fs",
                what,
                attempt,
                describe_error(error),
                pause,
            )
            sleep(pause)


__all__ = [
    "CONFLICTS",
    "Commit",
    "ConflictsOutlastedError",
    "append_marked",
    "append_once",
    "backoff_seconds",
    "changed_partitions",
    "commit_tag",
    "committed_transactions",
    "date_literals",
    "dates_predicate",
    "ensure_table",
    "path_missing",
    "read_snapshot",
    "read_table",
    "replace_partitions",
    "retry_conflicts",
    "table_version",
    "tagged_commit",
    "writer_mark",
]
