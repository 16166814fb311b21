"""The Kinesis source: the awslabs connector's options (EMR), and a shard reader (boto3).

Two ways in, one RAW contract (docs/kinesis.md):

* on EMR 7 the awslabs Spark connector (format ``aws-kinesis``, in the release image) can read
  the stream; ``kinesis_connector_options`` builds its options from ``sources.kinesis``
  (pure, tested). It is not on Maven Central, so it cannot run locally;
* everywhere, ``KinesisShardReader`` reads the shards from the driver with boto3 (the same
  code against AWS and against the local moto endpoint) for the Kinesis raw archiver
  (``weir.layers.streaming.kinesis``), which commits each round to RAW with its positions.

The reader keeps one position per shard (the last sequence number read), reads parents
before children after a reshard, retries throttling with bounded backoff and renews
expired iterators from the position: it never skips a record. It reads; it never commits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional, TypeVar

from weir.config import KinesisSourceConfig, WeirConfig
from weir.errors import WeirError
from weir.sources.records import decoded_payload

log = logging.getLogger("weir.stream")

KINESIS = "kinesis"
CONNECTOR_FORMAT = "aws-kinesis"
# GetRecords returns at most 10,000 records per call (the service limit).
GET_RECORDS_LIMIT = 10_000
# GetRecords calls per shard per round: bounds a round that keeps reading empty stretches
# of a shard (Kinesis may answer empty while MillisBehindLatest > 0).
MAX_CALLS_PER_SHARD_PER_ROUND = 50
# Backoff of a throttled call: 0.1 s doubling to 5 s, 10 attempts (~25 s), then the run
# fails (restart resumes from the committed positions; nothing is skipped).
RETRY_ATTEMPTS = 10
RETRY_FIRST_DELAY_SECONDS = 0.1
RETRY_MAX_DELAY_SECONDS = 5.0
THROTTLING_ERRORS = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "ThrottlingException",
        "KMSThrottlingException",
    }
)
EXPIRED_ITERATOR_ERROR = "ExpiredIteratorException"
# GetRecords calls spent looking for a shard's oldest retained record (Kinesis may answer
# empty before the first record of a sparse shard).
MAX_CALLS_TO_FIND_TRIM_HORIZON = 10
# What a gap is: a position older than the shard's trim horizon, or a parent shard that
# expired (no longer listed) before it was read to its end.
TRIMMED_POSITION = "trimmed_position"
EXPIRED_PARENT_SHARD = "expired_parent_shard"

T = TypeVar("T")


# --- EMR: the awslabs connector ------------------------------------------------------------


def kinesis_endpoint(kinesis: KinesisSourceConfig) -> str:
    """``sources.kinesis.endpoint_url``, else the region's public endpoint (the connector
    requires one)."""
    return kinesis.endpoint_url or f"https://kinesis.{kinesis.region}.amazonaws.com"


def efo_consumer_name(stream: str) -> str:
    """The enhanced fan-out consumer registered for SubscribeToShard (one per stream)."""
    return f"weir-{stream}"


def kinesis_connector_options(kinesis: KinesisSourceConfig) -> dict[str, str]:
    """Options of the awslabs connector (``spark.readStream.format("aws-kinesis")``). Pure.

    ``failOnDataLoss`` is true (the connector's default is false): a shard whose records
    expired before they were read stops the query instead of being skipped silently.
    """
    options = {
        "kinesis.streamName": kinesis.stream,
        "kinesis.region": kinesis.region,
        "kinesis.endpointUrl": kinesis_endpoint(kinesis),
        "kinesis.consumerType": kinesis.consumer_type,
        "kinesis.startingPosition": kinesis.starting_position,
        "kinesis.maxFetchRecordsPerShard": str(kinesis.max_records_per_shard),
        "kinesis.failOnDataLoss": "true",
    }
    if kinesis.consumer_type == "SubscribeToShard":
        options["kinesis.consumerName"] = efo_consumer_name(kinesis.stream)
    return options


# --- shards and where to start reading them ------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """One shard of the stream as ListShards describes it."""

    shard_id: str
    parent_ids: tuple[str, ...] = ()
    closed: bool = False  # has an ending sequence number: split or merged away


def shards_from_listing(listed: Iterable[Mapping[str, Any]]) -> list[Shard]:
    """Shards from ListShards entries (``Shards`` of every page), in listing order. Pure."""
    return [
        Shard(
            shard_id=entry["ShardId"],
            parent_ids=tuple(
                p for p in (entry.get("ParentShardId"), entry.get("AdjacentParentShardId")) if p
            ),
            closed="EndingSequenceNumber" in entry.get("SequenceNumberRange", {}),
        )
        for entry in listed
    ]


def readable_shards(shards: Sequence[Shard], finished: set[str]) -> list[Shard]:
    """The shards to read now: not finished, and every parent finished. Pure.

    After a split or merge, a child's records come after its parents' (per partition key),
    so a child waits until its parents are read to their end. A parent that ListShards no
    longer returns has expired (retention) and holds nothing left to read.
    """
    listed = {shard.shard_id for shard in shards}
    return [
        shard
        for shard in shards
        if shard.shard_id not in finished
        and all(parent in finished or parent not in listed for parent in shard.parent_ids)
    ]


def iterator_request(shard: Shard, position: Optional[str], starting_position: str) -> dict:
    """GetShardIterator arguments for a shard (without the stream name). Pure.

    After the last committed (or read) sequence number when there is one; otherwise the
    configured start, except that a child shard always starts at TRIM_HORIZON (LATEST would
    skip what was written to it while its parents were being read).
    """
    if position is not None:
        return {
            "ShardId": shard.shard_id,
            "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
            "StartingSequenceNumber": position,
        }
    start = "TRIM_HORIZON" if shard.parent_ids else starting_position
    return {"ShardId": shard.shard_id, "ShardIteratorType": start}


def sequence_order(sequence_number: str) -> int:
    """Kinesis sequence numbers are decimal strings of up to 128 digits: compare as numbers."""
    return int(sequence_number)


def latest_sequence(numbers: Iterable[str]) -> Optional[str]:
    """The greatest sequence number, None for none. Pure."""
    return max(numbers, key=sequence_order, default=None)


# --- gaps: records Kinesis trimmed before they were read -----------------------------------


@dataclass(frozen=True)
class Gap:
    """Records of one shard that may have expired unread: after ``after_sequence_number``
    (the last archived) and before ``before_sequence_number`` (the first still retained;
    None: nothing of the shard is retained)."""

    shard_id: str
    after_sequence_number: Optional[str]
    before_sequence_number: Optional[str]
    kind: str  # TRIMMED_POSITION | EXPIRED_PARENT_SHARD

    def describe(self) -> str:
        until = self.before_sequence_number or "the end of what the shard held"
        what = "was trimmed" if self.kind == TRIMMED_POSITION else "expired as a parent shard"
        return (
            f"shard {self.shard_id} {what} before it was read: records after sequence number "
            f"{self.after_sequence_number} up to {until} may be lost"
        )


class KinesisDataLossError(WeirError):
    """Records expired before the archiver read them (sources.kinesis.fail_on_data_loss)."""


def position_trimmed(position: str, first_retained: Optional[str]) -> bool:
    """Whether the record at ``position`` is gone: the shard's oldest retained record comes
    after it, or the shard retains nothing (it held ``position`` once). Pure.

    Kinesis trims a shard oldest first and does not say what it trimmed, so whether records
    lay between the two is unknown: a trimmed position is a possible gap.
    """
    return first_retained is None or sequence_order(first_retained) > sequence_order(position)


def expired_parent_gaps(
    shards: Sequence[Shard],
    finished: set[str],
    positions: Mapping[str, str],
) -> list[Gap]:
    """Parents no longer listed (expired) that were being read and not finished. Pure.

    A parent counts as read to its end when it finished in this run or one of its children
    holds a position (children are read only after their parents finished).
    """
    listed = {shard.shard_id for shard in shards}
    gaps: dict[str, Gap] = {}
    for shard in shards:
        for parent in shard.parent_ids:
            if parent in listed or parent in finished or parent not in positions:
                continue
            children = [s.shard_id for s in shards if parent in s.parent_ids]
            if any(child in positions for child in children):
                continue
            gaps[parent] = Gap(parent, positions[parent], None, EXPIRED_PARENT_SHARD)
    return list(gaps.values())


# --- retries --------------------------------------------------------------------------------


def error_code(error: BaseException) -> Optional[str]:
    """The AWS error code of a botocore ClientError (None for anything else)."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return None
    return response.get("Error", {}).get("Code")


def backoff_delays(
    attempts: int = RETRY_ATTEMPTS,
    first: float = RETRY_FIRST_DELAY_SECONDS,
    cap: float = RETRY_MAX_DELAY_SECONDS,
) -> list[float]:
    """The waits between ``attempts`` tries: doubling from ``first``, capped at ``cap``. Pure."""
    return [min(cap, first * 2**n) for n in range(attempts - 1)]


def retry_throttled(
    call: Callable[[], T],
    what: str,
    wait: Callable[[float], object] = time.sleep,
    delays: Sequence[float] = tuple(backoff_delays()),
) -> T:
    """``call()``, retried after each throttling error with the given ``delays``.

    Any other error propagates at once. When the delays run out, a WeirError: the caller
    fails the run rather than skip a record (a restart resumes from committed positions).
    """
    for delay in (*delays, None):
        try:
            return call()
        except Exception as error:
            code = error_code(error)
            if code not in THROTTLING_ERRORS:
                raise
            if delay is None:
                raise WeirError(
                    f"Kinesis kept throttling {what} ({code}) after {len(delays) + 1} "
                    "attempts; nothing was skipped: the next start resumes from the last "
                    "committed position. Raise the stream's capacity or lower "
                    "sources.kinesis.max_records_per_shard"
                ) from error
            log.info("%s throttled (%s); retrying in %.1fs", what, code, delay)
            wait(delay)
    raise AssertionError("unreachable")


# --- one round of reads --------------------------------------------------------------------


@dataclass
class ShardRead:
    """What one round read from one shard."""

    shard_id: str
    records: list[dict] = field(default_factory=list)
    millis_behind_latest: Optional[int] = None
    finished: bool = False  # closed and read to its end (no next iterator)

    @property
    def caught_up(self) -> bool:
        """Nothing read and nothing behind: the shard's tip (or its end) was reached."""
        return self.finished or (not self.records and self.millis_behind_latest == 0)


@dataclass
class RoundRead:
    """What one round read from every readable shard."""

    shards: list[ShardRead]
    # A shard reached its end this round: its children become readable next round.
    unlocked_children: bool = False

    @property
    def record_count(self) -> int:
        return sum(len(shard.records) for shard in self.shards)

    @property
    def caught_up(self) -> bool:
        """Every readable shard answered empty at its tip, and none was left unread."""
        return not self.unlocked_children and all(shard.caught_up for shard in self.shards)

    def positions(self) -> dict[str, str]:
        """The last sequence number read per shard (shards that returned records)."""
        return {
            shard.shard_id: shard.records[-1]["SequenceNumber"]
            for shard in self.shards
            if shard.records
        }


def raw_rows(
    stream: str, shard_id: str, records: Iterable[Mapping[str, Any]], ingest_time: datetime
) -> list[tuple]:
    """RAW_SCHEMA tuples for GetRecords records of one shard, stamped ``ingest_time``. Pure.

    The payload is the data as UTF-8 text; data that is not UTF-8 is also kept as bytes
    (``payload_bytes``), and classified malformed_json (weir.sources.records.decoded_payload).
    """
    ingest_utc = ingest_time.astimezone(timezone.utc)
    rows = []
    for record in records:
        payload, payload_bytes = decoded_payload(bytes(record["Data"]))
        rows.append(
            (
                KINESIS,
                stream,
                shard_id,
                record["SequenceNumber"],
                record.get("PartitionKey"),
                payload,
                record.get("ApproximateArrivalTimestamp"),
                ingest_utc,
                ingest_utc.date(),
                payload_bytes,
            )
        )
    return rows


class KinesisShardReader:
    """Reads the shards of one stream in rounds, from given positions, with boto3.

    ``positions`` maps shard id to the last sequence number already archived; the reader
    advances them as it reads (the caller commits them with the data). Iterators are kept
    between rounds (GetShardIterator is limited to 5 calls/s per shard) and renewed from
    the position when they expire.
    """

    def __init__(
        self,
        client: Any,
        stream: str,
        starting_position: str,
        positions: Optional[Mapping[str, str]] = None,
        wait: Callable[[float], object] = time.sleep,
        retry_delays: Sequence[float] = tuple(backoff_delays()),
        fail_on_data_loss: bool = True,
    ) -> None:
        self.client = client
        self.stream = stream
        self.starting_position = starting_position
        self.positions: dict[str, str] = dict(positions or {})
        self.finished: set[str] = set()
        self.fail_on_data_loss = fail_on_data_loss
        # Gaps found and accepted (fail_on_data_loss false), until the caller takes them.
        self.gaps: list[Gap] = []
        self._checked: set[str] = set()  # shards whose position was checked against trimming
        self._from_horizon: set[str] = set()  # trimmed positions: read on from TRIM_HORIZON
        self._iterators: dict[str, str] = {}
        self._shards: dict[str, Shard] = {}
        self._wait = wait
        self._retry_delays = tuple(retry_delays)

    def _retry(self, call: Callable[[], T], what: str) -> T:
        return retry_throttled(call, what, self._wait, self._retry_delays)

    def list_shards(self) -> list[Shard]:
        """Every shard ListShards returns (all pages), parents included while retained."""
        entries: list[dict] = []
        request: dict[str, Any] = {"StreamName": self.stream}
        while True:
            page = self._retry(lambda r=request: self.client.list_shards(**r), "ListShards")
            entries.extend(page.get("Shards", []))
            token = page.get("NextToken")
            if not token:
                break
            request = {"NextToken": token}  # ListShards refuses StreamName with a token
        shards = shards_from_listing(entries)
        self._shards = {shard.shard_id: shard for shard in shards}
        return shards

    def _found(self, gap: Gap) -> None:
        """A gap: fail (the default), or keep it for the caller to record and read on."""
        if self.fail_on_data_loss:
            raise KinesisDataLossError(
                f"Kinesis stream {self.stream}: {gap.describe()}. Nothing of this round was "
                "committed. The archiver was stopped for longer than the stream's retention, "
                "or fell behind it. To accept the gap and go on (it is recorded in "
                "_control/kinesis_gaps), set sources.kinesis.fail_on_data_loss: false"
            )
        log.warning("Kinesis stream %s: %s; accepted, recorded", self.stream, gap.describe())
        self.gaps.append(gap)

    def take_gaps(self) -> list[Gap]:
        """The gaps accepted since the last call (the caller records them before it commits)."""
        gaps, self.gaps = self.gaps, []
        return gaps

    def first_retained(self, shard: Shard) -> Optional[str]:
        """The sequence number of the shard's oldest retained record; None if it holds none."""
        response = self._retry(
            lambda: self.client.get_shard_iterator(
                StreamName=self.stream, ShardId=shard.shard_id, ShardIteratorType="TRIM_HORIZON"
            ),
            f"GetShardIterator on {shard.shard_id}",
        )
        iterator = response["ShardIterator"]
        for _ in range(MAX_CALLS_TO_FIND_TRIM_HORIZON):
            answer = self._retry(
                lambda it=iterator: self.client.get_records(ShardIterator=it, Limit=1),
                f"GetRecords on {shard.shard_id}",
            )
            if answer.get("Records"):
                return answer["Records"][0]["SequenceNumber"]
            iterator = answer.get("NextShardIterator")
            if iterator is None or answer.get("MillisBehindLatest") == 0:
                return None
        return None

    def _check_position(self, shard: Shard) -> None:
        """Once per shard, before reading on from a position: is that position still there?"""
        position = self.positions.get(shard.shard_id)
        if position is None or shard.shard_id in self._checked:
            return
        first = self.first_retained(shard)
        if position_trimmed(position, first):
            self._found(Gap(shard.shard_id, position, first, TRIMMED_POSITION))
            self._from_horizon.add(shard.shard_id)
        self._checked.add(shard.shard_id)

    def _new_iterator(self, shard: Shard) -> str:
        self._check_position(shard)
        if shard.shard_id in self._from_horizon:
            # An accepted gap: on from the oldest retained record (real Kinesis need not
            # accept AFTER_SEQUENCE_NUMBER of a record it no longer holds).
            request = {"ShardId": shard.shard_id, "ShardIteratorType": "TRIM_HORIZON"}
        else:
            request = iterator_request(
                shard, self.positions.get(shard.shard_id), self.starting_position
            )
        response = self._retry(
            lambda: self.client.get_shard_iterator(StreamName=self.stream, **request),
            f"GetShardIterator on {shard.shard_id}",
        )
        return response["ShardIterator"]

    def _get_records(self, shard: Shard, limit: int) -> dict:
        """One GetRecords call; an expired iterator is renewed from the position and retried."""
        what = f"GetRecords on {shard.shard_id}"

        def call() -> dict:
            if shard.shard_id not in self._iterators:
                self._iterators[shard.shard_id] = self._new_iterator(shard)
            try:
                return self.client.get_records(
                    ShardIterator=self._iterators[shard.shard_id], Limit=limit
                )
            except Exception as error:
                if error_code(error) != EXPIRED_ITERATOR_ERROR:
                    raise
                log.info("%s: iterator expired; renewing it from the last position", what)
                self._iterators[shard.shard_id] = self._new_iterator(shard)
                return self.client.get_records(
                    ShardIterator=self._iterators[shard.shard_id], Limit=limit
                )

        return self._retry(call, what)

    def read_shard(self, shard: Shard, max_records: int) -> ShardRead:
        """Up to ``max_records`` records of one shard, from its position onwards."""
        read = ShardRead(shard.shard_id)
        for _ in range(MAX_CALLS_PER_SHARD_PER_ROUND):
            limit = min(GET_RECORDS_LIMIT, max_records - len(read.records))
            response = self._get_records(shard, limit)
            records = response.get("Records", [])
            read.records.extend(records)
            read.millis_behind_latest = response.get("MillisBehindLatest")
            if records:
                self.positions[shard.shard_id] = records[-1]["SequenceNumber"]
                self._from_horizon.discard(shard.shard_id)
            next_iterator = response.get("NextShardIterator")
            # A closed shard is read to its end when Kinesis gives no next iterator; an
            # empty answer at the tip of a closed shard means the same (no writes can
            # reach it any more; the local endpoint always returns an iterator).
            at_end_of_closed = shard.closed and not records and read.millis_behind_latest == 0
            if next_iterator is None or at_end_of_closed:
                self._iterators.pop(shard.shard_id, None)
                self.finished.add(shard.shard_id)
                read.finished = True
                break
            self._iterators[shard.shard_id] = next_iterator
            if len(read.records) >= max_records or read.millis_behind_latest == 0:
                break
        return read

    def read_round(self, max_records_per_shard: int) -> RoundRead:
        """One round: list the shards, read each readable one up to the cap."""
        shards = self.list_shards()
        for gap in expired_parent_gaps(shards, self.finished, self.positions):
            if gap.shard_id not in self._checked:
                self._checked.add(gap.shard_id)
                self._found(gap)
        readable = readable_shards(shards, self.finished)
        reads = [self.read_shard(shard, max_records_per_shard) for shard in readable]
        before = {shard.shard_id for shard in readable}
        after = {shard.shard_id for shard in readable_shards(shards, self.finished)}
        return RoundRead(reads, unlocked_children=bool(after - before))


def kinesis_client(config: WeirConfig) -> Any:
    """A boto3 Kinesis client at ``sources.kinesis.endpoint_url`` (else ``aws.endpoint_url``).

    botocore's standard retry mode covers transient network and 5xx errors; throttling is
    retried again, visibly, by ``retry_throttled``.
    """
    from weir.aws import aws_client

    return aws_client(
        config,
        "kinesis",
        endpoint_url=config.sources.kinesis.endpoint_url,
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=5,
        read_timeout=30,
    )


__all__ = [
    "CONNECTOR_FORMAT",
    "EXPIRED_PARENT_SHARD",
    "KINESIS",
    "TRIMMED_POSITION",
    "Gap",
    "KinesisDataLossError",
    "KinesisShardReader",
    "RoundRead",
    "Shard",
    "ShardRead",
    "backoff_delays",
    "expired_parent_gaps",
    "iterator_request",
    "kinesis_client",
    "kinesis_connector_options",
    "latest_sequence",
    "position_trimmed",
    "raw_rows",
    "readable_shards",
    "retry_throttled",
    "sequence_order",
    "shards_from_listing",
]
