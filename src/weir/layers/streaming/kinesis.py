"""`weir stream --source kinesis`: the Kinesis raw archiver and its speed layer.

The awslabs connector is not on Maven Central (docs/kinesis.md), so locally, and wherever
it is missing, the raw archiver is a driver-side loop:

* ``KinesisArchiver`` reads every readable shard in rounds (``weir.sources.kinesis``), turns
  a round into one DataFrame of RAW rows (one ``ingest_time`` per round), appends it to RAW
  and its quarantine rows to QUARANTINE, each a Delta idempotent write keyed by
  (``kinesis-<stream>-raw|quarantine``, round number);
* its shard positions are the RAW rows themselves (shard id, sequence number): they commit
  atomically with the data, and a restart reads them back (the greatest sequence number per
  shard), repairs a round whose quarantine append did not commit, and continues;
* ``speed-kinesis`` is a Structured Streaming query on the RAW Delta table, filtered to the
  stream, feeding the shared speed transforms and MERGE, with its own checkpoint.

``run_kinesis_stream`` wires them and mirrors :func:`weir.layers.streaming.run.run_stream`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from weir.config import ConfigError, KinesisSourceConfig, WeirConfig
from weir.contract import classify_records, quarantine_rows
from weir.control.fences import FenceKeeper, hold_fence
from weir.control.runs import utc_now
from weir.crashpoints import KINESIS_RAW_COMMITTED, crash_point
from weir.delta import append_once, committed_transactions, read_table, tagged_commit
from weir.errors import WeirError
from weir.lake import LakeLayout
from weir.layers.streaming.archiver import WriterIds
from weir.layers.streaming.progress import ProgressRecorder
from weir.layers.streaming.queries import (
    StreamResult,
    await_poll,
    ensure_stream_tables,
    raise_if_failed,
    raw_query_name,
    speed_query_name,
    start_speed_layer,
    stop_gracefully,
)
from weir.layers.streaming.speed import raw_stream, source_rows
from weir.schemas import (
    KINESIS_GAP_SCHEMA,
    QUARANTINE_PARTITION_COLUMNS,
    RAW_PARTITION_COLUMNS,
    RAW_SCHEMA,
)
from weir.sources.kinesis import (
    KINESIS,
    Gap,
    KinesisShardReader,
    RoundRead,
    kinesis_client,
    raw_rows,
)

log = logging.getLogger("weir.stream")

RAW_KINESIS = raw_query_name(KINESIS)
SPEED_KINESIS = speed_query_name(KINESIS)
# Rounds of an --available-now run before it gives up on a stream that never drains (a
# producer faster than the archiver): ~10 million records at the default cap and 2 shards.
MAX_AVAILABLE_NOW_ROUNDS = 50


def archiver_writer_ids(stream: str) -> WriterIds:
    """The Delta transaction app ids of the Kinesis archiver of ``stream``."""
    return WriterIds(raw=f"kinesis-{stream}-raw", quarantine=f"kinesis-{stream}-quarantine")


def archiver_fence(stream: str) -> str:
    """The writer fence of the Kinesis archiver of ``stream`` (weir.control.fences)."""
    return f"kinesis-{stream}"


# --- what RAW says was committed -----------------------------------------------------------


def stream_rows(raw: DataFrame, stream: str) -> DataFrame:
    """The RAW rows of one Kinesis stream. Pure."""
    return source_rows(raw, KINESIS, stream)


def shard_positions(raw: DataFrame, stream: str) -> DataFrame:
    """Per shard of ``stream``: the greatest sequence number archived and the latest ingest
    time (``source_partition``, ``source_offset``, ``ingest_time``). Pure.

    Sequence numbers are decimal text without leading zeros, so (length, text) orders them
    as numbers.
    """
    greatest = F.max(F.struct(F.length("source_offset"), F.col("source_offset")))
    return (
        stream_rows(raw, stream)
        .groupBy("source_partition")
        .agg(
            greatest["source_offset"].alias("source_offset"),
            F.max("ingest_time").alias("ingest_time"),
        )
    )


@dataclass(frozen=True)
class CommittedState:
    """Where the archiver of one stream stands, read from RAW and QUARANTINE."""

    raw_round: Optional[int]  # latest round committed to RAW (Delta txn version)
    quarantine_round: Optional[int]  # latest round committed to QUARANTINE
    positions: dict[str, str]  # shard id -> last sequence number archived
    last_ingest_time: Optional[datetime]  # the ingest time of the latest round in RAW

    @property
    def next_round(self) -> int:
        return 0 if self.raw_round is None else self.raw_round + 1

    @property
    def rounds_missing_quarantine(self) -> int:
        """Rounds in RAW whose quarantine append did not commit: 1 after a crash between
        the two appends, 0 normally; more means QUARANTINE was changed by hand."""
        if self.raw_round is None:
            return 0
        quarantined = -1 if self.quarantine_round is None else self.quarantine_round
        return max(0, self.raw_round - quarantined)


def read_committed_state(
    spark: SparkSession, lake: LakeLayout, stream: str, writer_ids: WriterIds
) -> CommittedState:
    """Rounds from the Delta logs' transactions, positions from RAW's rows of ``stream``."""
    rows = shard_positions(spark.read.format("delta").load(lake.raw), stream).collect()
    times = [row["ingest_time"] for row in rows]
    return CommittedState(
        raw_round=committed_transactions(spark, lake.raw).get(writer_ids.raw),
        quarantine_round=committed_transactions(spark, lake.quarantine).get(writer_ids.quarantine),
        positions={row["source_partition"]: row["source_offset"] for row in rows},
        last_ingest_time=max(times) if times else None,
    )


def round_ingest_time(now: datetime, previous: Optional[datetime]) -> datetime:
    """The ingest time of a new round: now, but always after the previous round's. Pure.

    Strictly increasing, so the latest round's rows are exactly those with the greatest
    ingest time (how a restart finds the round whose quarantine it must complete).
    """
    now = now.astimezone(timezone.utc)
    if previous is None:
        return now
    after_previous = previous.astimezone(timezone.utc) + timedelta(microseconds=1)
    return max(now, after_previous)


def round_metadata(
    stream: str,
    round_id: int,
    records: Optional[int],
    positions: dict[str, str],
    writer: Optional[str] = None,
) -> str:
    """The commit's ``userMetadata``: for people reading DESCRIBE HISTORY, and, naming the
    writer, for the archiver to find its own commit (``verify_committed``)."""
    return json.dumps(
        {
            "kinesis_stream": stream,
            "round": round_id,
            "records": records,
            "positions": positions,
            "writer": writer,
        },
        sort_keys=True,
    )


def gap_rows(stream: str, gaps: list[Gap], detected_at: datetime, holder: Optional[str]) -> list:
    """KINESIS_GAP_SCHEMA tuples for accepted gaps. Pure."""
    return [
        (
            stream,
            gap.shard_id,
            gap.after_sequence_number,
            gap.before_sequence_number,
            gap.kind,
            detected_at,
            holder,
        )
        for gap in gaps
    ]


# --- the archiver ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundOutcome:
    """What one archiver round did."""

    round_id: Optional[int]  # None: nothing read, nothing committed
    records: int
    caught_up: bool  # every readable shard answered empty at its tip
    backlog: bool  # some shard hit the per-round cap: start the next round at once


class KinesisArchiver:
    """Archives one Kinesis stream into RAW and QUARANTINE, exactly once, round by round.

    Crash anywhere, restart, and ``recover`` finds the committed rounds and positions:

    * before the RAW commit: nothing of the round is committed; it is read again;
    * after RAW, before QUARANTINE: the round's rows are in RAW; ``recover`` classifies
      exactly those rows (greatest ingest time) and appends their quarantine with the
      round's version;
    * after both: the positions in RAW are past the round; the next round follows.
    """

    def __init__(
        self,
        spark: SparkSession,
        lake: LakeLayout,
        kinesis: KinesisSourceConfig,
        client: Any,
        wait: Callable[[float], object] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        fence: Optional[FenceKeeper] = None,
    ) -> None:
        self.spark = spark
        self.fence = fence
        # Names this archiver in its commits' userMetadata (its fence holder when fenced).
        self.writer = fence.lease.holder if fence and fence.lease else f"unfenced-{id(self):x}"
        self.lake = lake
        self.kinesis = kinesis
        self.stream = kinesis.stream
        self.writer_ids = archiver_writer_ids(kinesis.stream)
        self.client = client
        self.wait = wait
        self.clock = clock
        self.reader: Optional[KinesisShardReader] = None
        self.next_round = 0
        self.last_ingest_time: Optional[datetime] = None
        self.last_round: Optional[int] = None
        self.records_archived = 0

    def recover(self) -> CommittedState:
        """Read the committed rounds and positions; complete a half-committed round."""
        state = read_committed_state(self.spark, self.lake, self.stream, self.writer_ids)
        if state.rounds_missing_quarantine > 1:
            raise WeirError(
                f"{self.lake.quarantine} holds rounds of Kinesis stream {self.stream} up to "
                f"{state.quarantine_round} but RAW up to {state.raw_round}: more than one "
                "round is missing, so QUARANTINE was changed outside Weir; restore it"
            )
        if state.rounds_missing_quarantine == 1:
            self._complete_quarantine(state)
        self.next_round = state.next_round
        self.last_round = state.raw_round
        self.last_ingest_time = state.last_ingest_time
        self.reader = KinesisShardReader(
            self.client,
            self.stream,
            self.kinesis.starting_position,
            positions=state.positions,
            wait=self.wait,
            fail_on_data_loss=self.kinesis.fail_on_data_loss,
        )
        log.info(
            "%s %s: resuming at round %d from %d shard positions",
            RAW_KINESIS,
            self.stream,
            self.next_round,
            len(state.positions),
        )
        return state

    def _complete_quarantine(self, state: CommittedState) -> None:
        raw = self.spark.read.format("delta").load(self.lake.raw)
        round_rows = stream_rows(raw, self.stream).where(
            F.col("ingest_time") == F.lit(state.last_ingest_time)
        )
        log.info(
            "%s %s: round %d reached RAW but not QUARANTINE; completing it",
            RAW_KINESIS,
            self.stream,
            state.raw_round,
        )
        metadata = round_metadata(self.stream, state.raw_round, None, state.positions, self.writer)
        self.ensure_fenced()
        self.append_quarantine(round_rows, state.raw_round, metadata)

    def run_round(self) -> RoundOutcome:
        """Read one round from every readable shard and commit it (if it read anything)."""
        if self.reader is None:
            raise RuntimeError("recover() first")
        started = time.monotonic()
        read = self.reader.read_round(self.kinesis.max_records_per_shard)
        backlog = any(
            len(shard.records) >= self.kinesis.max_records_per_shard for shard in read.shards
        )
        # Accepted gaps are recorded before the positions past them are committed.
        self.record_gaps(self.reader.take_gaps())
        if not read.record_count:
            return RoundOutcome(None, 0, read.caught_up, backlog)
        round_id = self.next_round
        ingest_time = round_ingest_time(self.clock(), self.last_ingest_time)
        rows = self.round_frame(read, ingest_time)
        metadata = round_metadata(
            self.stream, round_id, read.record_count, dict(self.reader.positions), self.writer
        )
        self.ensure_fenced()
        self.append_raw(rows, round_id, metadata)
        self.verify_committed(round_id, metadata)
        crash_point(KINESIS_RAW_COMMITTED)
        self.append_quarantine(rows, round_id, metadata)
        self.next_round, self.last_round = round_id + 1, round_id
        self.last_ingest_time = ingest_time
        self.records_archived += read.record_count
        log.info(
            "%s %s round %d: %d records archived in %.2fs (%s)",
            RAW_KINESIS,
            self.stream,
            round_id,
            read.record_count,
            time.monotonic() - started,
            ", ".join(
                f"{shard.shard_id}: {len(shard.records)}, {shard.millis_behind_latest} ms behind"
                for shard in read.shards
            ),
        )
        return RoundOutcome(round_id, read.record_count, read.caught_up, backlog)

    def round_frame(self, read: RoundRead, ingest_time: datetime) -> DataFrame:
        rows = [
            row
            for shard in read.shards
            for row in raw_rows(self.stream, shard.shard_id, shard.records, ingest_time)
        ]
        return self.spark.createDataFrame(rows, RAW_SCHEMA)

    def ensure_fenced(self) -> None:
        """FenceLostError (nothing committed) if another archiver took this stream over."""
        if self.fence is not None:
            self.fence.ensure_held()

    def verify_committed(self, round_id: int, metadata: str) -> None:
        """WeirError unless RAW's round ``round_id`` is this archiver's own commit.

        Delta skips, without an error, an append whose version its app id already
        recorded: another archiver committed this round first. The records this one read are
        then not archived while its positions moved on; it must stop, loudly, and a restart
        reads them from the committed positions.
        """
        if tagged_commit(self.spark, self.lake.raw, metadata) is None:
            raise WeirError(
                f"{RAW_KINESIS} {self.stream}: round {round_id} was already committed to RAW "
                f"by another writer ({self.writer_ids.raw}), so Delta skipped this one's. Two "
                "archivers ran on one stream; this one stops without moving on. Run one "
                "archiver per stream; a restart resumes from what RAW holds"
            )

    def record_gaps(self, gaps: list[Gap]) -> None:
        """Append accepted gaps to _control/kinesis_gaps, each once (a restart that finds a
        gap again before its round committed does not record it twice)."""
        if not gaps:
            return
        known = read_table(self.spark, self.lake.kinesis_gaps)
        if known is not None:
            seen = {
                (row["shard_id"], row["after_sequence_number"], row["kind"])
                for row in known.where(F.col("stream") == self.stream).collect()
            }
            gaps = [g for g in gaps if (g.shard_id, g.after_sequence_number, g.kind) not in seen]
        if not gaps:
            return
        rows = gap_rows(self.stream, gaps, utc_now(), self.writer)
        self.spark.createDataFrame(rows, KINESIS_GAP_SCHEMA).write.format("delta").mode(
            "append"
        ).save(self.lake.kinesis_gaps)
        log.warning(
            "%s %s: recorded %d gap(s) in %s",
            RAW_KINESIS,
            self.stream,
            len(gaps),
            self.lake.kinesis_gaps,
        )

    def append_raw(self, rows: DataFrame, round_id: int, metadata: str) -> None:
        append_once(
            rows, self.lake.raw, RAW_PARTITION_COLUMNS, self.writer_ids.raw, round_id, metadata
        )

    def append_quarantine(self, rows: DataFrame, round_id: int, metadata: str) -> None:
        """Classify the round's RAW rows and append the invalid ones (a round without any
        commits too, so QUARANTINE's round always follows RAW's)."""
        quarantine = rows.transform(classify_records).transform(quarantine_rows)
        append_once(
            quarantine,
            self.lake.quarantine,
            QUARANTINE_PARTITION_COLUMNS,
            self.writer_ids.quarantine,
            round_id,
            metadata,
        )

    def drain(self, stop: threading.Event, max_rounds: int = MAX_AVAILABLE_NOW_ROUNDS) -> None:
        """Rounds until every readable shard answers empty at its tip (or ``stop`` is set)."""
        for _ in range(max_rounds):
            if stop.is_set():
                return
            if self.run_round().caught_up:
                return
        raise WeirError(
            f"Kinesis stream {self.stream} was not drained after {max_rounds} rounds (records "
            "keep arriving faster than they are archived); what was read is committed: run "
            "without --available-now to keep up"
        )


# --- the run ---------------------------------------------------------------------------------


@dataclass
class KinesisStreamResult(StreamResult):
    """What a `weir stream --source kinesis` run did (``last_batch``: the archiver's last
    committed round and the speed query's last batch)."""

    source: str = KINESIS
    records_archived: int = 0
    rounds: list[int] = field(default_factory=list)


def check_kinesis_arguments(reset_checkpoint: bool) -> None:
    """ConfigError (exit 2, nothing written) for arguments that do not apply to Kinesis."""
    if reset_checkpoint:
        raise ConfigError(
            "--reset-checkpoint",
            "does not apply to --source kinesis: the archiver's shard positions are the RAW "
            "rows themselves, so there is no checkpoint to reset; to rebuild the speed view "
            "delete _checkpoints/speed-kinesis",
        )


def require_stream(client: Any, stream: str, endpoint: Optional[str]) -> None:
    """WeirError (exit 1) when the stream does not exist at the endpoint."""
    from botocore.exceptions import ClientError

    try:
        client.describe_stream_summary(StreamName=stream)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        where = endpoint or "AWS"
        raise WeirError(
            f"Kinesis stream {stream!r} (sources.kinesis.stream) does not exist at {where}; "
            "create it (locally: `weir infra up`)"
        ) from None


def run_kinesis_stream(
    spark: SparkSession,
    config: WeirConfig,
    available_now: bool = False,
    reset_checkpoint: bool = False,
    stop: Optional[threading.Event] = None,
    client: Any = None,
) -> KinesisStreamResult:
    """Archive Kinesis stream ``sources.kinesis.stream`` into RAW/QUARANTINE and keep its
    speed view, exactly once (docs/kinesis.md).

    ``available_now``: read until every open shard answers empty at its tip, then bring the
    speed view up to date and return. Otherwise a round every
    ``timing.trigger_interval_seconds`` (at once while a shard has a backlog) until ``stop``
    is set. Raises ConfigError for bad arguments (nothing written), WeirError for a failure.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    check_kinesis_arguments(reset_checkpoint)
    try:
        return _run(spark, config, available_now, stop or threading.Event(), client)
    except (BotoCoreError, ClientError) as error:
        raise WeirError(
            f"{RAW_KINESIS}: a Kinesis call failed: {error}. What was committed stays; the "
            "next start resumes from it"
        ) from error


def _run(
    spark: SparkSession,
    config: WeirConfig,
    available_now: bool,
    stop: threading.Event,
    client: Any,
) -> KinesisStreamResult:
    started = time.monotonic()
    lake = LakeLayout.from_config(config)
    kinesis = config.sources.kinesis
    client = client or kinesis_client(config)
    require_stream(client, kinesis.stream, kinesis.endpoint_url or config.aws.endpoint_url)
    # One archiver per stream: a second one is refused before it writes anything, and one
    # that lost its fence (presumed dead, taken over) stops before its next commit.
    with hold_fence(
        config, lake.writer_fences, archiver_fence(kinesis.stream), on_lost=stop.set
    ) as fence:
        result = _run_fenced(spark, config, available_now, stop, client, fence)
        fence.raise_if_lost()
    result.seconds = time.monotonic() - started
    return result


def _run_fenced(
    spark: SparkSession,
    config: WeirConfig,
    available_now: bool,
    stop: threading.Event,
    client: Any,
    fence: FenceKeeper,
) -> KinesisStreamResult:
    lake = LakeLayout.from_config(config)
    kinesis = config.sources.kinesis
    ensure_stream_tables(spark, lake)
    archiver = KinesisArchiver(spark, lake, kinesis, client, fence=fence)
    archiver.recover()
    result = KinesisStreamResult()
    recorder = ProgressRecorder((SPEED_KINESIS,))
    spark.streams.addListener(recorder)
    speed: Optional[StreamingQuery] = None
    try:
        if available_now:
            archiver.drain(stop)
            if not stop.is_set():
                speed = start_speed_layer(
                    spark,
                    config,
                    KINESIS,
                    available_now=True,
                    records=_archived(spark, lake, kinesis),
                    before_commit=fence.ensure_held,
                )
                _await_finished(speed, stop)
        else:
            archived = _archived(spark, lake, kinesis)
            speed = start_speed_layer(
                spark, config, KINESIS, False, records=archived, before_commit=fence.ensure_held
            )
            result.progress_rows += _follow(archiver, speed, recorder, config, stop)
        if speed is not None:
            raise_if_failed([speed])
        result.stopped_by_signal = stop.is_set()
    finally:
        if speed is not None:
            stop_gracefully([speed] if speed.isActive else [])
            recorder.wait_for_termination([speed.id], timeout=10.0)
            progress = speed.lastProgress
            result.last_batch[SPEED_KINESIS] = None if progress is None else progress["batchId"]
        result.progress_rows += recorder.flush(spark, lake.stream_progress)
        spark.streams.removeListener(recorder)
        result.last_batch[RAW_KINESIS] = archiver.last_round
        result.records_archived = archiver.records_archived
    return result


def _archived(spark: SparkSession, lake: LakeLayout, kinesis: KinesisSourceConfig) -> DataFrame:
    """The speed query's input: what the archiver committed to RAW for this stream."""
    return raw_stream(spark, lake.raw, KINESIS, kinesis.stream)


def _await_finished(query: StreamingQuery, stop: threading.Event) -> None:
    """Until the query finished (or failed: the caller reports it) or ``stop`` is set."""
    while query.isActive and not stop.is_set():
        await_poll(query)


def _follow(
    archiver: KinesisArchiver,
    speed: StreamingQuery,
    recorder: ProgressRecorder,
    config: WeirConfig,
    stop: threading.Event,
) -> int:
    """Rounds at the trigger interval (at once while backlogged) until ``stop`` is set;
    returns the progress rows recorded."""
    lake = LakeLayout.from_config(config)
    interval = float(config.timing.trigger_interval_seconds)
    recorded = 0
    while not stop.is_set():
        round_started = time.monotonic()
        outcome = archiver.run_round()
        raise_if_failed([speed])
        recorded += recorder.flush_if_due(archiver.spark, lake.stream_progress)
        if not outcome.backlog:
            stop.wait(max(0.0, interval - (time.monotonic() - round_started)))
    return recorded
