"""The checkpoint guard: a streaming query's checkpoint and its exactly-once writes agree.

The raw archiver appends with a commit mark (writer id, batch id) and skips a batch its writer
already committed, judged from the writes the tables held when the query started (tables
written before the marks carry Delta ``txn`` actions instead; both count). A query started
from a fresh checkpoint numbers its batches from 0 again, so if the table already holds
writes of that writer, every "already seen" batch would be skipped: data loss. Before a
query starts, the guard compares the checkpoint's offset and commit logs with the writes
recorded in the target tables' Delta logs, refuses to start when they disagree, and hands
the archiver what each writer last committed.

``--reset-checkpoint`` is the way out after a checkpoint was lost on purpose: the query
starts a new *epoch*, whose app ids carry an ``-e<N>`` suffix Delta has never seen, so no
write is skipped. The epoch is recorded in the checkpoint folder (``_weir_epoch``); when the
folder is gone, the next epoch is derived from the app ids the tables hold.

Everything here reads files through Spark's own readers (local disk or S3 alike): the Delta
log's JSON commits and Parquet checkpoint, and the streaming checkpoint's offset log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Optional

from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from weir.config import ConfigError
from weir.delta import committed_transactions, path_missing
from weir.errors import WeirError

EPOCH_MARKER = "_weir_epoch"
_EPOCH_SUFFIX = re.compile(r"-e(\d+)$")


def last_planned_batch(spark: SparkSession, checkpoint: str) -> Optional[int]:
    """The highest batch id in a streaming checkpoint's offset log; None if it never started."""
    return _last_batch_in(spark, f"{checkpoint.rstrip('/')}/offsets")


def last_committed_batch(spark: SparkSession, checkpoint: str) -> Optional[int]:
    """The highest batch id in a streaming checkpoint's commit log (batches whose sink work
    finished); None if none did."""
    return _last_batch_in(spark, f"{checkpoint.rstrip('/')}/commits")


def _last_batch_in(spark: SparkSession, folder: str) -> Optional[int]:
    try:
        names = (
            spark.read.format("text")
            .load(folder)
            .select(F.col("_metadata.file_name").alias("name"))
            .where(F.col("name").rlike(r"^\d+$"))
            .agg(F.max(F.col("name").cast("long")).alias("batch"))
            .first()
        )
    except AnalysisException as error:
        if not path_missing(error):
            raise
        return None
    return None if names is None or names["batch"] is None else int(names["batch"])


def latest_offsets_text(spark: SparkSession, checkpoint: str) -> Optional[str]:
    """The text of the newest file of a checkpoint's offset log; None if it never started."""
    last = last_planned_batch(spark, checkpoint)
    if last is None:
        return None
    lines = spark.read.text(f"{checkpoint.rstrip('/')}/offsets/{last}").collect()
    return "\n".join(row["value"] for row in lines)


def check_speed_checkpoint_reads_source(
    spark: SparkSession, query_name: str, checkpoint: str
) -> None:
    """Refuse a speed checkpoint written when the speed query read RAW (a Delta source).

    Its offsets are RAW table versions, meaningless to a query reading the source itself, and
    Spark would fail on them mid-start. Deleting it is safe: SPEED is an upserted view, and the
    new query rebuilds its open windows from the source.
    """
    text = latest_offsets_text(spark, checkpoint)
    if text is not None and '"reservoirId"' in text:
        raise WeirError(
            f"{query_name}: the checkpoint {checkpoint} was written when the speed layer read "
            "the RAW table; it now reads the source itself. Delete that folder (only that one) "
            "and start again: the speed layer rebuilds its open windows from the source"
        )


def read_epoch(spark: SparkSession, checkpoint: str) -> Optional[int]:
    """The reset epoch recorded in a checkpoint folder, None when none was recorded."""
    try:
        marker = f"{checkpoint.rstrip('/')}/{EPOCH_MARKER}"
        row = spark.read.schema("epoch INT").json(marker).first()
    except AnalysisException as error:
        if not path_missing(error):
            raise
        return None
    return None if row is None else row["epoch"]


def write_epoch(spark: SparkSession, checkpoint: str, epoch: int) -> None:
    spark.createDataFrame([(epoch,)], "epoch INT").coalesce(1).write.mode("overwrite").json(
        f"{checkpoint.rstrip('/')}/{EPOCH_MARKER}"
    )


@dataclass(frozen=True)
class QueryWriters:
    """The Delta app ids of the raw archiver's two writes in one epoch."""

    query_name: str
    epoch: int
    # The latest batch each writer had committed when the guard read the tables: the
    # archiver appends a batch only above it (compare=False: not part of the ids' identity).
    committed: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType({}), compare=False
    )

    def _app_id(self, target: str) -> str:
        suffix = f"-e{self.epoch}" if self.epoch else ""
        return f"{self.query_name}-{target}{suffix}"

    @property
    def raw(self) -> str:
        return self._app_id("raw")

    @property
    def quarantine(self) -> str:
        return self._app_id("quarantine")


def epoch_of(query_name: str, app_id: str) -> Optional[int]:
    """The epoch of one of this query's app ids, None for another writer's app id."""
    for target in ("raw", "quarantine"):
        stem = f"{query_name}-{target}"
        if app_id == stem:
            return 0
        if app_id.startswith(stem):
            match = _EPOCH_SUFFIX.fullmatch(app_id[len(stem) :])
            if match:
                return int(match.group(1))
    return None


def guard_checkpoint(
    spark: SparkSession,
    query_name: str,
    checkpoint: str,
    table_paths: tuple[str, ...],
    reset_checkpoint: bool = False,
) -> QueryWriters:
    """Check the checkpoint against the tables' Delta logs; return the app ids to write with.

    Raises WeirError (nothing written) when a fresh checkpoint would make Delta skip batches,
    or when the checkpoint is behind the tables; ConfigError when ``reset_checkpoint`` is
    asked for while a checkpoint exists.
    """
    last_batch = last_planned_batch(spark, checkpoint)
    recorded_epoch = read_epoch(spark, checkpoint)
    expected = QueryWriters(query_name, recorded_epoch or 0)
    ours: dict[str, int] = {}
    for path in table_paths:
        # Each table holds one of the current writers; reading its history stops at their
        # newest marks (a fresh checkpoint with other epochs' writes reads it all).
        written = committed_transactions(spark, path, (expected.raw, expected.quarantine))
        for app_id, version in written.items():
            if epoch_of(query_name, app_id) is not None:
                ours[app_id] = max(ours.get(app_id, -1), version)

    if last_batch is not None:
        if reset_checkpoint:
            raise ConfigError(
                "--reset-checkpoint",
                f"the checkpoint {checkpoint} holds batches up to {last_batch}; it needs no "
                "reset. To start over anyway, delete that folder first, then run with "
                "--reset-checkpoint",
            )
        writers = QueryWriters(query_name, recorded_epoch or 0)
        for app_id in (writers.raw, writers.quarantine):
            written = ours.get(app_id, -1)
            if written > last_batch:
                raise WeirError(
                    f"{query_name}: the checkpoint {checkpoint} is behind its output: it has "
                    f"batches up to {last_batch} but {app_id} already wrote batch {written}. "
                    "Batches in between would be skipped as already written (data loss). "
                    "Was the checkpoint restored from an older copy? Restore the latest one, "
                    "or delete it and run with --reset-checkpoint"
                )
        _check_replay_decidable(spark, checkpoint, last_batch, writers, ours, table_paths)
        return QueryWriters(writers.query_name, writers.epoch, MappingProxyType(ours))

    # A fresh checkpoint. Writes of the app ids it would use would be skipped; writes of this
    # query in other epochs are harmless to Delta, but without an epoch marker nobody chose to
    # start over: refuse rather than silently re-read the whole source.
    epoch = recorded_epoch or 0
    current = QueryWriters(query_name, epoch)
    at_risk = {app: v for app, v in ours.items() if app in (current.raw, current.quarantine)}
    refuse = at_risk if recorded_epoch is not None else ours
    if refuse and not reset_checkpoint:
        listed = ", ".join(f"{app} up to batch {v}" for app, v in sorted(refuse.items()))
        raise WeirError(
            f"{query_name}: the checkpoint {checkpoint} is missing or empty, but the tables "
            f"already hold this query's writes ({listed}). A fresh checkpoint restarts batch "
            "ids at 0 and Delta would skip those batches as already written: data loss. "
            "Restore the checkpoint folder, or run again with --reset-checkpoint to start a "
            "new epoch (the source is read again from its starting position, so records "
            "already archived are archived again; the batch layer counts each event once)"
        )
    if reset_checkpoint and ours:
        epoch = max(epoch, *(epoch_of(query_name, app) or 0 for app in ours)) + 1
    if epoch != (recorded_epoch or 0):
        write_epoch(spark, checkpoint, epoch)
    return QueryWriters(query_name, epoch, MappingProxyType(ours))


def _check_replay_decidable(
    spark: SparkSession,
    checkpoint: str,
    last_planned: int,
    writers: QueryWriters,
    written: Mapping[str, int],
    table_paths: tuple[str, ...],
) -> None:
    """Refuse when a pending replay cannot be judged from what the tables' logs still hold.

    Only a batch planned but not committed (a crash inside it) can already be in a table.
    A writer's newest mark found answers for it: Delta's log clean-up removes the oldest
    commits first, so every commit after that mark is still there. No mark at all is an
    answer too when the log still starts at its first commit (an empty append makes no
    commit, so a writer with only empty batches has none). Otherwise its marks may have left
    the log (a mark lives only in its commit's JSON file; log clean-up removes commits older
    than ``delta.logRetentionDuration`` once a later checkpoint exists): whether the batch
    was written cannot be told, and guessing could duplicate it.
    """
    committed = last_committed_batch(spark, checkpoint)
    if committed is not None and committed >= last_planned:
        return  # nothing to replay: every batch of the next run is new
    for app_id, path in zip((writers.raw, writers.quarantine), table_paths):
        if app_id in written or log_starts_at_first_commit(spark, path):
            continue
        raise WeirError(
            f"{writers.query_name}: batch {last_planned} of the checkpoint {checkpoint} is to "
            f"be replayed, but {path} shows no write of {app_id} and its Delta log no longer "
            "starts at the table's first commit: the commits that recorded this writer's "
            "batches have left the log (log retention), so whether batch "
            f"{last_planned} was already written cannot be told. Nothing was written. "
            "Restore the Delta log files, or delete the checkpoint and run with "
            "--reset-checkpoint (records still in the source are archived again)"
        )


def log_starts_at_first_commit(spark: SparkSession, path: str) -> bool:
    """Whether the Delta log at ``path`` still holds its first commit (or there is no table):
    then the log holds every commit ever made."""
    try:
        spark.read.text(f"{path.rstrip('/')}/_delta_log/{0:020d}.json").limit(1).collect()
    except AnalysisException as error:
        if not path_missing(error):
            raise
        try:  # no first commit: no table at all, or a cleaned log
            spark.read.text(f"{path.rstrip('/')}/_delta_log").limit(1).collect()
        except AnalysisException as missing:
            if not path_missing(missing):
                raise
            return True
        return False
    return True
