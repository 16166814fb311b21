"""The Kinesis source: connector options, the shard reader, and the raw archiver exactly once.

Unit tests drive ``KinesisShardReader`` with an in-memory stand-in for the Kinesis API
(throttling, expired iterators and resharding on demand: the local endpoint does none of
them). The slow tests put records on a stream of their own at the local moto endpoint and
check the tables after each run, crash and restart (docs/kinesis.md).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import pytest
from botocore.exceptions import ClientError
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession

from weir.config import ConfigError, KinesisSourceConfig, WeirConfig
from weir.contract import aggregate_minutes, classify_records, dedup_first_received, valid_events
from weir.delta import committed_transactions
from weir.errors import WeirError
from weir.infra.process import wait_until
from weir.lake import LakeLayout, local_path
from weir.layers.streaming.kinesis import (
    KinesisArchiver,
    archiver_writer_ids,
    round_ingest_time,
    run_kinesis_stream,
    shard_positions,
)
from weir.sample import mixed_sample
from weir.schemas import LAYER_SPEED, MINUTE_SCHEMA, RAW_SCHEMA
from weir.sources.kinesis import (
    EXPIRED_PARENT_SHARD,
    Gap,
    KinesisShardReader,
    Shard,
    backoff_delays,
    expired_parent_gaps,
    iterator_request,
    kinesis_client,
    kinesis_connector_options,
    position_trimmed,
    raw_rows,
    readable_shards,
    shards_from_listing,
)
from weir.speed_table import read_speed

UTC = timezone.utc
VIEW_COLUMNS = [f.name for f in MINUTE_SCHEMA.fields if f.name != "computed_at"]
NO_WAIT = (0.0,) * 9


# --- the connector's options (EMR) -----------------------------------------------------------


def kinesis_section(**changes: Any) -> KinesisSourceConfig:
    return KinesisSourceConfig(
        **{"stream": "telemetry", "region": "eu-west-1", "max_records_per_shard": 500, **changes}
    )


def test_connector_options_for_get_records() -> None:
    options = kinesis_connector_options(
        kinesis_section(endpoint_url="https://kinesis.eu-west-1.amazonaws.com")
    )
    assert options == {
        "kinesis.streamName": "telemetry",
        "kinesis.region": "eu-west-1",
        "kinesis.endpointUrl": "https://kinesis.eu-west-1.amazonaws.com",
        "kinesis.consumerType": "GetRecords",
        "kinesis.startingPosition": "TRIM_HORIZON",
        "kinesis.maxFetchRecordsPerShard": "500",
        "kinesis.failOnDataLoss": "true",
    }


def test_connector_options_for_enhanced_fan_out_name_a_consumer_and_default_the_endpoint() -> None:
    options = kinesis_connector_options(
        kinesis_section(consumer_type="SubscribeToShard", starting_position="LATEST")
    )
    assert options["kinesis.consumerType"] == "SubscribeToShard"
    assert options["kinesis.consumerName"] == "weir-telemetry"
    assert options["kinesis.startingPosition"] == "LATEST"
    assert options["kinesis.endpointUrl"] == "https://kinesis.eu-west-1.amazonaws.com"


# --- shards, positions, rows (pure) -----------------------------------------------------------


def test_listing_keeps_both_parents_of_a_merged_shard_and_marks_closed_shards() -> None:
    listed = [
        {"ShardId": "a", "SequenceNumberRange": {"StartingSequenceNumber": "1"}},
        {
            "ShardId": "b",
            "ParentShardId": "x",
            "AdjacentParentShardId": "y",
            "SequenceNumberRange": {"StartingSequenceNumber": "5", "EndingSequenceNumber": "9"},
        },
    ]
    assert shards_from_listing(listed) == [Shard("a"), Shard("b", ("x", "y"), closed=True)]


def test_a_child_shard_is_read_only_after_all_its_parents() -> None:
    parent, other = Shard("p", closed=True), Shard("q", closed=True)
    split_child, merged_child = Shard("c1", ("p",)), Shard("m", ("p", "q"))
    orphan = Shard("o", ("expired-parent",))  # its parent is past retention, not listed
    shards = [parent, other, split_child, merged_child, orphan]

    assert readable_shards(shards, finished=set()) == [parent, other, orphan]
    assert readable_shards(shards, finished={"p"}) == [other, split_child, orphan]
    assert readable_shards(shards, finished={"p", "q"}) == [split_child, merged_child, orphan]


@pytest.mark.parametrize(
    ("shard", "position", "start", "expected"),
    [
        (Shard("s"), "42", "LATEST", {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER"}),
        (Shard("s"), None, "TRIM_HORIZON", {"ShardIteratorType": "TRIM_HORIZON"}),
        (Shard("s"), None, "LATEST", {"ShardIteratorType": "LATEST"}),
        (Shard("s", ("p",)), None, "LATEST", {"ShardIteratorType": "TRIM_HORIZON"}),
    ],
)
def test_iterator_starts_after_the_position_else_at_the_configured_start(
    shard: Shard, position: Optional[str], start: str, expected: dict
) -> None:
    request = iterator_request(shard, position, start)
    assert request["ShardId"] == "s"
    assert request["ShardIteratorType"] == expected["ShardIteratorType"]
    assert request.get("StartingSequenceNumber") == position


@pytest.mark.parametrize(
    ("position", "first_retained", "trimmed"),
    [
        ("5", "3", False),  # the position is still retained
        ("5", "5", False),
        ("5", "6", True),  # the oldest retained record comes after it
        ("9", "10", True),  # compared as numbers, not text
        ("5", None, True),  # nothing retained: it held the position once
    ],
)
def test_a_position_is_trimmed_when_the_oldest_retained_record_comes_after_it(
    position: str, first_retained: Optional[str], trimmed: bool
) -> None:
    assert position_trimmed(position, first_retained) is trimmed


def test_an_expired_parent_is_a_gap_only_if_it_was_being_read_and_not_finished() -> None:
    children = [Shard("a", ("p",)), Shard("b", ("p",))]
    gap = Gap("p", "7", None, EXPIRED_PARENT_SHARD)
    assert expired_parent_gaps(children, set(), {"p": "7"}) == [gap]
    assert expired_parent_gaps(children, {"p"}, {"p": "7"}) == []  # read to its end here
    assert expired_parent_gaps(children, set(), {"p": "7", "a": "9"}) == []  # a child began
    assert expired_parent_gaps(children, set(), {}) == []  # never read: expired before
    assert expired_parent_gaps([Shard("p"), *children], set(), {"p": "7"}) == []  # listed


def test_backoff_doubles_and_is_capped() -> None:
    assert backoff_delays(attempts=8, first=0.1, cap=1.0) == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


def test_raw_rows_carry_shard_sequence_key_and_the_round_time() -> None:
    arrival = datetime(2026, 3, 1, 23, 59, tzinfo=UTC)
    ingest = datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC)
    record = {
        "SequenceNumber": "4960",
        "PartitionKey": "vehicle-1",
        "Data": b'{"a": 1}\xff',
        "ApproximateArrivalTimestamp": arrival,
    }
    assert raw_rows("telemetry", "shardId-1", [record], ingest) == [
        (
            "kinesis",
            "telemetry",
            "shardId-1",
            "4960",
            "vehicle-1",
            '{"a": 1}\ufffd',  # invalid UTF-8 is kept (and quarantined), never dropped
            arrival,
            ingest,
            ingest.date(),
            b'{"a": 1}\xff',  # payload_bytes: the data as received
        )
    ]


def test_a_round_is_always_stamped_after_the_previous_one() -> None:
    previous = datetime(2026, 3, 1, 12, 0, 0, 500, tzinfo=UTC)
    earlier_clock = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)  # the clock stepped back
    assert round_ingest_time(earlier_clock, previous) == previous + timedelta(microseconds=1)
    later = datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)
    assert round_ingest_time(later, previous) == later
    assert round_ingest_time(later, None) == later


def test_positions_compare_sequence_numbers_as_numbers(spark: SparkSession) -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    later = now + timedelta(seconds=5)
    rows = [
        ("kinesis", "s", "shard-0", "9", None, "{}", None, now, now.date(), None),
        ("kinesis", "s", "shard-0", "10", None, "{}", None, later, now.date(), None),
        ("kinesis", "s", "shard-1", "7", None, "{}", None, now, now.date(), None),
        ("kinesis", "other", "shard-0", "99", None, "{}", None, later, now.date(), None),
        ("kafka", "s", "shard-0", "100", None, "{}", None, later, now.date(), None),
    ]
    actual = shard_positions(spark.createDataFrame(rows, RAW_SCHEMA), "s")
    expected = spark.createDataFrame(
        [("shard-0", "10", later), ("shard-1", "7", now)],
        "source_partition STRING, source_offset STRING, ingest_time TIMESTAMP",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


# --- the shard reader against an in-memory Kinesis ---------------------------------------------


def client_error(code: str, operation: str = "GetRecords") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, operation)


@dataclass
class FakeShard:
    shard_id: str
    parents: tuple[str, ...] = ()
    closed: bool = False
    records: list[str] = field(default_factory=list)  # payloads; sequence number = index+1


@dataclass
class FakeKinesis:
    """ListShards, GetShardIterator and GetRecords over in-memory shards.

    ``failures`` is a queue of error codes that the next GetRecords calls raise; an iterator
    is ``shard:last-sequence``; a closed shard's last page has no next iterator.
    """

    shards: list[FakeShard]
    failures: list[str] = field(default_factory=list)
    get_records_calls: int = 0
    iterator_requests: list[dict] = field(default_factory=list)

    def _shard(self, shard_id: str) -> FakeShard:
        return next(s for s in self.shards if s.shard_id == shard_id)

    def list_shards(self, **_: Any) -> dict:
        entries = []
        for shard in self.shards:
            entry: dict[str, Any] = {"ShardId": shard.shard_id, "SequenceNumberRange": {}}
            if shard.parents:
                entry["ParentShardId"] = shard.parents[0]
            if len(shard.parents) > 1:
                entry["AdjacentParentShardId"] = shard.parents[1]
            if shard.closed:
                entry["SequenceNumberRange"]["EndingSequenceNumber"] = "999"
            entries.append(entry)
        return {"Shards": entries}

    def get_shard_iterator(self, StreamName: str, ShardId: str, **request: Any) -> dict:  # noqa: N803
        self.iterator_requests.append({"ShardId": ShardId, **request})
        kind = request["ShardIteratorType"]
        start = {"TRIM_HORIZON": 0, "LATEST": len(self._shard(ShardId).records)}.get(
            kind, int(request.get("StartingSequenceNumber", 0))
        )
        return {"ShardIterator": f"{ShardId}:{start}"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict:  # noqa: N803
        self.get_records_calls += 1
        if self.failures:
            raise client_error(self.failures.pop(0))
        shard_id, last = ShardIterator.rsplit(":", 1)
        shard = self._shard(shard_id)
        start = int(last)
        page = shard.records[start : start + Limit]
        end = start + len(page)
        records = [
            {"SequenceNumber": str(start + n + 1), "Data": p.encode(), "PartitionKey": "k"}
            for n, p in enumerate(page)
        ]
        at_end = end == len(shard.records)
        response = {"Records": records, "MillisBehindLatest": 0 if at_end else 1000}
        if not (shard.closed and at_end):
            response["NextShardIterator"] = f"{shard_id}:{end}"
        return response


def payloads(read_round: Any) -> list[str]:
    return [r["Data"].decode() for shard in read_round.shards for r in shard.records]


def test_throttled_reads_are_retried_with_backoff_and_skip_nothing() -> None:
    kinesis = FakeKinesis([FakeShard("s0", records=["a", "b", "c"])])
    kinesis.failures = ["ProvisionedThroughputExceededException"] * 2
    waits: list[float] = []
    reader = KinesisShardReader(
        kinesis, "stream", "TRIM_HORIZON", wait=waits.append, retry_delays=(0.1, 0.2, 0.4)
    )

    read = reader.read_round(max_records_per_shard=10)

    assert payloads(read) == ["a", "b", "c"]
    assert waits == [0.1, 0.2]
    assert reader.positions == {"s0": "3"}


def test_throttling_past_the_last_attempt_fails_the_round_without_moving_on() -> None:
    kinesis = FakeKinesis([FakeShard("s0", records=["a"])])
    kinesis.failures = ["ProvisionedThroughputExceededException"] * 4
    reader = KinesisShardReader(
        kinesis, "stream", "TRIM_HORIZON", positions={"s0": "0"}, retry_delays=(0.0, 0.0)
    )
    with pytest.raises(WeirError, match=r"kept throttling GetRecords on s0.*nothing was skipped"):
        reader.read_round(max_records_per_shard=10)
    assert kinesis.get_records_calls == 3
    assert reader.positions == {"s0": "0"}


def test_an_error_other_than_throttling_is_not_retried() -> None:
    kinesis = FakeKinesis([FakeShard("s0", records=["a"])])
    kinesis.failures = ["AccessDeniedException"]
    reader = KinesisShardReader(kinesis, "stream", "TRIM_HORIZON", retry_delays=NO_WAIT)
    with pytest.raises(ClientError, match="AccessDenied"):
        reader.read_round(max_records_per_shard=10)
    assert kinesis.get_records_calls == 1


def test_an_expired_iterator_is_renewed_after_the_last_record_read() -> None:
    kinesis = FakeKinesis([FakeShard("s0", records=["a", "b", "c", "d"])])
    reader = KinesisShardReader(kinesis, "stream", "TRIM_HORIZON", retry_delays=NO_WAIT)
    assert payloads(reader.read_round(max_records_per_shard=2)) == ["a", "b"]

    kinesis.failures = ["ExpiredIteratorException"]
    assert payloads(reader.read_round(max_records_per_shard=2)) == ["c", "d"]
    assert kinesis.iterator_requests[-1] == {
        "ShardId": "s0",
        "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
        "StartingSequenceNumber": "2",
    }


def test_the_cap_per_shard_spreads_a_backlog_over_rounds_and_the_tip_ends_the_drain() -> None:
    kinesis = FakeKinesis(
        [FakeShard("s0", records=list("abcde")), FakeShard("s1", records=list("xy"))]
    )
    reader = KinesisShardReader(kinesis, "stream", "TRIM_HORIZON", retry_delays=NO_WAIT)

    first = reader.read_round(max_records_per_shard=3)
    assert payloads(first) == ["a", "b", "c", "x", "y"]
    assert not first.caught_up
    second = reader.read_round(max_records_per_shard=3)
    assert payloads(second) == ["d", "e"]
    assert not second.caught_up  # records were read: only an empty answer proves the tip
    third = reader.read_round(max_records_per_shard=3)
    assert payloads(third) == [] and third.caught_up
    assert reader.positions == {"s0": "5", "s1": "2"}


def test_a_resharded_stream_is_read_parents_first_and_children_after() -> None:
    kinesis = FakeKinesis(
        [
            FakeShard("parent", closed=True, records=["p0", "p1", "p2"]),
            FakeShard("child-a", parents=("parent",), records=["a1"]),
            FakeShard("child-b", parents=("parent",), records=["b1"]),
        ]
    )
    reader = KinesisShardReader(  # p0 (sequence number 1) was archived before
        kinesis, "stream", "LATEST", positions={"parent": "1"}, retry_delays=NO_WAIT
    )

    first = reader.read_round(max_records_per_shard=10)
    assert payloads(first) == ["p1", "p2"]
    assert reader.finished == {"parent"}
    assert first.unlocked_children and not first.caught_up
    second = reader.read_round(max_records_per_shard=10)
    # Children start at TRIM_HORIZON even with starting_position LATEST: nothing written to
    # them while the parent was read is skipped.
    assert payloads(second) == ["a1", "b1"]
    assert {r["ShardId"]: r["ShardIteratorType"] for r in kinesis.iterator_requests} == {
        "parent": "AFTER_SEQUENCE_NUMBER",
        "child-a": "TRIM_HORIZON",
        "child-b": "TRIM_HORIZON",
    }
    assert reader.read_round(max_records_per_shard=10).caught_up


def test_a_restarted_reader_continues_after_the_committed_positions() -> None:
    kinesis = FakeKinesis([FakeShard("s0", records=["a", "b", "c"])])
    reader = KinesisShardReader(
        kinesis, "stream", "TRIM_HORIZON", positions={"s0": "2"}, retry_delays=NO_WAIT
    )
    assert payloads(reader.read_round(max_records_per_shard=10)) == ["c"]


def test_reset_checkpoint_is_a_bad_argument_for_kinesis(weir_config: WeirConfig) -> None:
    with pytest.raises(ConfigError, match=r"--reset-checkpoint.*no checkpoint to reset"):
        run_kinesis_stream(None, weir_config, available_now=True, reset_checkpoint=True)  # type: ignore[arg-type]


class DescribeFails:
    """A Kinesis client whose first call, DescribeStreamSummary, fails with ``code``."""

    def __init__(self, code: str) -> None:
        self.code = code

    def describe_stream_summary(self, **_: Any) -> dict:
        raise client_error(self.code, "DescribeStreamSummary")


def test_a_missing_stream_fails_before_anything_is_written(weir_config: WeirConfig) -> None:
    with pytest.raises(WeirError, match=r"stream 'telemetry' \(sources.kinesis.stream\) does"):
        run_kinesis_stream(None, weir_config, client=DescribeFails("ResourceNotFoundException"))  # type: ignore[arg-type]


def test_a_failed_kinesis_call_is_a_runtime_failure_with_the_reason(
    weir_config: WeirConfig,
) -> None:
    with pytest.raises(WeirError, match=r"a Kinesis call failed.*AccessDenied"):
        run_kinesis_stream(None, weir_config, client=DescribeFails("AccessDeniedException"))  # type: ignore[arg-type]


# --- end to end against the local endpoint ------------------------------------------------------


@dataclass(frozen=True, order=True)
class Put:
    """A record the producer put, as Kinesis acknowledged it."""

    shard_id: str
    sequence_number: str
    payload: str


def with_cap(config: WeirConfig, max_records_per_shard: int) -> WeirConfig:
    kinesis = config.sources.kinesis.model_copy(
        update={"max_records_per_shard": max_records_per_shard}
    )
    return config.model_copy(
        update={"sources": config.sources.model_copy(update={"kinesis": kinesis})}
    )


def put(config: WeirConfig, lines: list[str]) -> list[Put]:
    """Put ``lines`` alternately on the stream's two shards (explicit hash keys)."""
    client = kinesis_client(config)
    stream = config.sources.kinesis.stream
    shards = client.list_shards(StreamName=stream)["Shards"]
    starts = [s["HashKeyRange"]["StartingHashKey"] for s in shards]
    entries = [
        {
            "Data": line.encode(),
            "PartitionKey": f"key-{n}",
            "ExplicitHashKey": starts[n % len(starts)],
        }
        for n, line in enumerate(lines)
    ]
    response = client.put_records(StreamName=stream, Records=entries)
    assert response.get("FailedRecordCount", 0) == 0
    return [
        Put(result["ShardId"], result["SequenceNumber"], line)
        for result, line in zip(response["Records"], lines)
    ]


def table(spark: SparkSession, path: str) -> DataFrame:
    return spark.read.format("delta").load(path)


def version(spark: SparkSession, path: str) -> int:
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, path).history(1).first()["version"]


def archived(spark: SparkSession, lake: LakeLayout) -> list[Put]:
    """RAW's Kinesis rows as puts, sorted; a duplicate would show twice."""
    rows = table(spark, lake.raw).where("source = 'kinesis'").collect()
    return sorted(Put(r.source_partition, r.source_offset, r.payload) for r in rows)


def assert_raw_is_valid_plus_quarantine(spark: SparkSession, lake: LakeLayout) -> None:
    raw = table(spark, lake.raw)
    valid = raw.transform(classify_records).transform(valid_events).count()
    assert raw.count() == valid + table(spark, lake.quarantine).count()


def assert_quarantine_rows_are_raw_rows(spark: SparkSession, lake: LakeLayout) -> None:
    keys = ["source_partition", "source_offset", "ingest_time"]
    quarantine = table(spark, lake.quarantine).select(*keys)
    assert quarantine.join(table(spark, lake.raw).select(*keys), keys, "left_anti").count() == 0
    assert quarantine.count() == quarantine.distinct().count()


def assert_speed_equals_batch(spark: SparkSession, lake: LakeLayout) -> None:
    events = (
        table(spark, lake.raw)
        .transform(classify_records)
        .transform(valid_events)
        .transform(dedup_first_received)
    )
    expected = aggregate_minutes(events, LAYER_SPEED, datetime(2000, 1, 1, tzinfo=UTC))
    actual = read_speed(spark, lake.speed)
    assert_df_equality(
        actual.select(*VIEW_COLUMNS),
        expected.select(*VIEW_COLUMNS),
        ignore_row_order=True,
        ignore_nullable=True,
    )


def split_conflicting_duplicate(sample: list[tuple[str, Optional[str]]]) -> tuple[list, str]:
    """The sample without its conflicting duplicate (a retry with other content), and it.

    Copies of one event in one speed micro-batch may win in any order; the test puts the
    conflicting copy in a later run, where first-received is unambiguous.
    """
    conflicting = next(
        payload
        for payload, reason in sample
        if reason is None and json.loads(payload).get("temperature_c") == 99.9
    )
    return [item for item in sample if item[0] != conflicting], conflicting


def recent_event(event_id: str, device: str, moment: datetime) -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "device_id": device,
            "event_time": moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "temperature_c": 20.0,
            "status": "parked",
        }
    )


@pytest.mark.slow
def test_available_now_archives_each_record_once_and_a_rerun_adds_nothing(
    spark: SparkSession, stream_config: WeirConfig
) -> None:
    config = stream_config  # one round (the crash test takes several)
    lake = LakeLayout.from_config(config)
    now = datetime.now(UTC).replace(microsecond=0)
    sample, conflicting = split_conflicting_duplicate(mixed_sample(25, seed=3, now=now))
    puts = put(config, [payload for payload, _ in sample])
    assert {p.shard_id for p in puts} == {s.shard_id for s in shards_of(config)}

    result = run_kinesis_stream(spark, config, available_now=True)

    assert archived(spark, lake) == sorted(puts)
    assert result.records_archived == len(puts)
    assert result.last_batch["raw-kinesis"] == 0  # one round, under the cap
    row = table(spark, lake.raw).where(f"payload = '{puts[0].payload}'").first()
    assert (row.source, row.source_stream, row.record_key) == (
        "kinesis",
        config.sources.kinesis.stream,
        "key-0",
    )
    assert row.arrival_time is not None
    reasons = Counter(r.reason for r in table(spark, lake.quarantine).select("reason").collect())
    assert reasons == Counter(reason for _, reason in sample if reason is not None)
    assert_raw_is_valid_plus_quarantine(spark, lake)
    assert_quarantine_rows_are_raw_rows(spark, lake)
    assert_speed_equals_batch(spark, lake)
    writers = archiver_writer_ids(config.sources.kinesis.stream)
    assert committed_transactions(spark, lake.raw)[writers.raw] == 0
    assert committed_transactions(spark, lake.quarantine)[writers.quarantine] == 0

    # A second run with nothing new: no commit to RAW or QUARANTINE.
    before = (version(spark, lake.raw), version(spark, lake.quarantine))
    again = run_kinesis_stream(spark, config, available_now=True)
    assert again.records_archived == 0
    assert (version(spark, lake.raw), version(spark, lake.quarantine)) == before

    # New records (and the conflicting retry) are archived once, after the others.
    later = [conflicting, recent_event("late-1", "vehicle-000", now), "not json"]
    puts += put(config, later)
    run_kinesis_stream(spark, config, available_now=True)
    assert archived(spark, lake) == sorted(puts)
    assert_raw_is_valid_plus_quarantine(spark, lake)
    assert_speed_equals_batch(spark, lake)


def shards_of(config: WeirConfig) -> list[Shard]:
    client = kinesis_client(config)
    return shards_from_listing(
        client.list_shards(StreamName=config.sources.kinesis.stream)["Shards"]
    )


@pytest.mark.slow
def test_a_crash_between_any_two_steps_neither_loses_nor_duplicates(
    spark: SparkSession, stream_config: WeirConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = with_cap(stream_config, 3)
    lake = LakeLayout.from_config(config)
    now = datetime.now(UTC).replace(microsecond=0)
    sample, _ = split_conflicting_duplicate(mixed_sample(6, seed=9, now=now))
    puts = put(config, [payload for payload, _ in sample])

    # 1. Crash before the first RAW commit: nothing is committed.
    def crash(*_: Any) -> None:
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(KinesisArchiver, "append_raw", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_kinesis_stream(spark, config, available_now=True)
    monkeypatch.undo()
    assert table(spark, lake.raw).count() == 0

    # 2. Crash after round 0's RAW commit, before its QUARANTINE commit.
    monkeypatch.setattr(KinesisArchiver, "append_quarantine", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_kinesis_stream(spark, config, available_now=True)
    monkeypatch.undo()
    round_0 = archived(spark, lake)
    assert len(round_0) == 6  # the cap: 3 per shard
    assert table(spark, lake.quarantine).count() == 0

    # 3. Restart, then crash after round 1's two commits, before round 2 is read.
    original_run_round = KinesisArchiver.run_round

    def one_round_then_crash(self: KinesisArchiver) -> Any:
        outcome = original_run_round(self)
        if outcome.round_id == 1:
            raise RuntimeError("simulated crash after round 1")
        return outcome

    monkeypatch.setattr(KinesisArchiver, "run_round", one_round_then_crash)
    with pytest.raises(RuntimeError, match="after round 1"):
        run_kinesis_stream(spark, config, available_now=True)
    monkeypatch.undo()
    # Round 0's quarantine was completed from its RAW rows, and round 1 was committed whole.
    writers = archiver_writer_ids(config.sources.kinesis.stream)
    assert committed_transactions(spark, lake.quarantine)[writers.quarantine] == 1
    assert set(round_0) < set(archived(spark, lake))
    assert_raw_is_valid_plus_quarantine(spark, lake)

    # 4. Restart: the rest, once.
    run_kinesis_stream(spark, config, available_now=True)
    assert archived(spark, lake) == sorted(puts)
    assert_raw_is_valid_plus_quarantine(spark, lake)
    assert_quarantine_rows_are_raw_rows(spark, lake)
    assert_speed_equals_batch(spark, lake)


@pytest.mark.slow
def test_without_available_now_rounds_follow_the_stream_until_stopped(
    spark: SparkSession, stream_config: WeirConfig
) -> None:
    config = stream_config.model_copy(
        update={"timing": stream_config.timing.model_copy(update={"trigger_interval_seconds": 1})}
    )
    lake = LakeLayout.from_config(config)
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = run_kinesis_stream(spark, config, stop=stop)
        except BaseException as error:  # reported by the test thread
            outcome["error"] = error

    runner = threading.Thread(target=run, name="kinesis-stream")
    runner.start()
    try:
        now = datetime.now(UTC)
        puts = put(config, [recent_event(f"follow-{n}", "vehicle-007", now) for n in range(6)])
        stream = config.sources.kinesis.stream
        wait_until(
            lambda: "error" in outcome or rows_committed(lake, stream) >= len(puts),
            timeout=180,
            what="records archived by the running stream",
            interval=1.0,
        )
    finally:
        stop.set()
        runner.join(timeout=180)
    assert not runner.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].stopped_by_signal
    assert archived(spark, lake) == sorted(puts)


def rows_committed(lake: LakeLayout, stream: str) -> int:
    """Rows the archiver of ``stream`` committed to RAW, from the Delta log's JSON commits.

    Read from files, not with Spark, so polling does not compete with the stream for cores.
    """
    app_id = archiver_writer_ids(stream).raw
    total = 0
    for commit in Path(local_path(lake.raw), "_delta_log").glob("*.json"):
        actions = [json.loads(line) for line in commit.read_text().splitlines() if line]
        if any(a.get("txn", {}).get("appId") == app_id for a in actions):
            info = next(a["commitInfo"] for a in actions if "commitInfo" in a)
            total += int(info["operationMetrics"]["numOutputRows"])
    return total
