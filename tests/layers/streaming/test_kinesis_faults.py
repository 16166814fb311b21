"""Kinesis faults on the local endpoint (moto): a second archiver, resharding, throttling,
trimmed records, kill -9 (docs/kinesis.md, "Faults").

moto neither throttles nor trims: ``Faulty`` wraps a real client of the local endpoint and
answers as Kinesis does once retention has trimmed a shard's oldest records (TRIM_HORIZON and
any older position start after them; an expired shard is no longer listed), or throttles the
next GetRecords calls. Everything else is the endpoint's own answer.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import pytest
from botocore.exceptions import ClientError
from pyspark.sql import SparkSession

from weir import crashpoints
from weir.config import WeirConfig
from weir.control.fences import FenceHeldError, LocalFenceStore, acquire, read_lease
from weir.crashpoints import CRASH_ENV, HOLD_ENV
from weir.entry import run_until_stopped
from weir.errors import WeirError
from weir.lake import LakeLayout
from weir.layers.streaming import run_stream
from weir.layers.streaming.kinesis import (
    KinesisArchiver,
    archiver_fence,
    run_kinesis_stream,
)
from weir.layers.streaming.queries import ensure_stream_tables
from weir.layers.streaming.run import stream_fence
from weir.sources.kinesis import (
    EXPIRED_PARENT_SHARD,
    TRIMMED_POSITION,
    KinesisDataLossError,
    KinesisShardReader,
    kinesis_client,
)

from .builders import StreamProcess, wait_stream_active
from .test_kinesis import archived, assert_raw_is_valid_plus_quarantine, put, rows_committed

pytestmark = pytest.mark.slow

NO_WAIT = (0.0,) * 9
FAR_AWAY = "another-host"  # a holder on another machine: only its heartbeat tells


class Faulty:
    """A Kinesis client of the local endpoint that answers as if records had been trimmed,
    shards had expired, or the stream were throttling."""

    def __init__(
        self,
        client: Any,
        trimmed_through: Optional[dict[str, str]] = None,
        expired: frozenset[str] = frozenset(),
        throttled_calls: int = 0,
    ) -> None:
        self.client = client
        self.trimmed_through = trimmed_through or {}
        self.expired = expired
        self.throttled_calls = throttled_calls
        self.throttled = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def list_shards(self, **request: Any) -> dict:
        page = self.client.list_shards(**request)
        page["Shards"] = [s for s in page["Shards"] if s["ShardId"] not in self.expired]
        return page

    def get_shard_iterator(self, **request: Any) -> dict:
        cut = self.trimmed_through.get(request["ShardId"])
        kind = request["ShardIteratorType"]
        older = kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER") and int(
            request["StartingSequenceNumber"]
        ) <= int(cut or 0)
        if cut is not None and (kind == "TRIM_HORIZON" or older):
            request = {
                **request,
                "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                "StartingSequenceNumber": cut,
            }
        return self.client.get_shard_iterator(**request)

    def get_records(self, **request: Any) -> dict:
        if self.throttled < self.throttled_calls:
            self.throttled += 1
            error = {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}
            raise ClientError({"Error": error}, "GetRecords")
        return self.client.get_records(**request)


def with_kinesis(config: WeirConfig, **changes: Any) -> WeirConfig:
    kinesis = config.sources.kinesis.model_copy(update=changes)
    return config.model_copy(
        update={"sources": config.sources.model_copy(update={"kinesis": kinesis})}
    )


def reader(config: WeirConfig, client: Any, **options: Any) -> KinesisShardReader:
    return KinesisShardReader(
        client,
        config.sources.kinesis.stream,
        "TRIM_HORIZON",
        wait=lambda _s: None,
        retry_delays=NO_WAIT,
        **options,
    )


def drain(source: KinesisShardReader, rounds: int = 20) -> list[dict]:
    records: list[dict] = []
    for _ in range(rounds):
        read = source.read_round(max_records_per_shard=3)
        records += [record for shard in read.shards for record in shard.records]
        if read.caught_up:
            return records
    raise AssertionError("the reader never caught up")


# --- one writer per identity --------------------------------------------------------------------


def test_a_second_archiver_on_one_stream_is_refused_naming_the_first(
    spark: SparkSession, stream_config: WeirConfig
) -> None:
    lake = LakeLayout.from_config(stream_config)
    fences = LocalFenceStore(lake.writer_fences)
    first = acquire(fences, archiver_fence(stream_config.sources.kinesis.stream), 90, host=FAR_AWAY)
    put(stream_config, ['{"event_id": "e1"}'])

    with pytest.raises(FenceHeldError, match=f"held by {first.holder} \\(host {FAR_AWAY}"):
        run_kinesis_stream(spark, stream_config, available_now=True)

    assert not Path(lake.raw.removeprefix("file://")).exists()  # nothing written


def test_a_second_weir_stream_on_one_checkpoint_is_refused_before_it_starts(
    spark: SparkSession, stream_config: WeirConfig
) -> None:
    lake = LakeLayout.from_config(stream_config)
    first = acquire(LocalFenceStore(lake.writer_fences), stream_fence("files"), 90, host=FAR_AWAY)

    with pytest.raises(FenceHeldError, match=f"stream-files is held by {first.holder}"):
        run_stream(spark, stream_config, "files", available_now=True)

    assert not Path(lake.checkpoint("raw-files").removeprefix("file://")).exists()


def test_an_archiver_whose_round_another_committed_first_stops_loudly_and_loses_nothing(
    spark: SparkSession, stream_config: WeirConfig
) -> None:
    # Two archivers that both believe they hold the stream (say, one paused past a takeover):
    # the fence cannot see that; the check of each RAW commit must.
    lake = LakeLayout.from_config(stream_config)
    puts = put(stream_config, [json.dumps({"event_id": f"e{n}"}) for n in range(8)])
    ensure_stream_tables(spark, lake)
    client = kinesis_client(stream_config)
    small = with_kinesis(stream_config, max_records_per_shard=2).sources.kinesis
    a = KinesisArchiver(spark, lake, small, client)
    b = KinesisArchiver(spark, lake, stream_config.sources.kinesis, client)
    a.recover()
    b.recover()
    assert a.run_round().round_id == 0  # 2 records of each shard

    # b read all 8 records for its round 0, which Delta skips as already written: without
    # the check, b would go on past 4 records nobody archived.
    with pytest.raises(WeirError, match="round 0 was already committed to RAW by another"):
        b.run_round()

    restarted = KinesisArchiver(spark, lake, stream_config.sources.kinesis, client)
    restarted.recover()
    restarted.run_round()
    assert archived(spark, lake) == sorted(puts)


# --- reading through resharding, throttling and trimming -----------------------------------------


class Resharded:
    """A 3-shard stream of the local endpoint shown as one shard split in two.

    moto's own SplitShard cannot stand in for Kinesis: it re-puts the parent's records and
    routes new ones by hash key to the first matching shard, closed or not (moto 5.2,
    ``Stream.get_shard_for_key``), so after a split records still land in the parent. Here
    shard 0 is the parent and shards 1 and 2 its children; until ``split()`` only the parent
    is listed, afterwards the parent is listed closed and the children with their parent, as
    ListShards shows a split. Records, iterators and sequence numbers are the endpoint's.
    """

    def __init__(self, client: Any, stream: str) -> None:
        self.client = client
        self.stream = stream
        listed = client.list_shards(StreamName=stream)["Shards"]
        self.parent, *self.children = (s["ShardId"] for s in listed)
        self.hash_keys = {s["ShardId"]: s["HashKeyRange"]["StartingHashKey"] for s in listed}
        self.ending: Optional[str] = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def put(self, key: str, payload: str, shard: str) -> None:
        self.client.put_record(
            StreamName=self.stream,
            Data=payload.encode(),
            PartitionKey=key,
            ExplicitHashKey=self.hash_keys[shard],
        )

    def split(self) -> None:
        records = self.client.get_records(
            ShardIterator=self.client.get_shard_iterator(
                StreamName=self.stream, ShardId=self.parent, ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"],
            Limit=10_000,
        )["Records"]
        self.ending = records[-1]["SequenceNumber"]

    def list_shards(self, **request: Any) -> dict:
        page = self.client.list_shards(**request)
        shards = {s["ShardId"]: s for s in page["Shards"]}
        parent = shards[self.parent]
        if self.ending is None:
            return {**page, "Shards": [parent]}
        parent["SequenceNumberRange"]["EndingSequenceNumber"] = self.ending
        children = [{**shards[c], "ParentShardId": self.parent} for c in self.children]
        return {**page, "Shards": [parent, *children]}


def test_records_put_across_a_split_are_read_once_each_parent_before_child(
    stream_config: WeirConfig,
) -> None:
    client = kinesis_client(stream_config)
    stream = f"{stream_config.sources.kinesis.stream}-split"
    client.create_stream(StreamName=stream, ShardCount=3)
    wait_stream_active(client, stream)
    try:
        kinesis = Resharded(client, stream)
        keys = [f"device-{n}" for n in range(8)]
        for key in keys:
            kinesis.put(key, f"{key}-before", kinesis.parent)
        source = KinesisShardReader(
            kinesis, stream, "TRIM_HORIZON", wait=lambda _s: None, retry_delays=NO_WAIT
        )
        first = source.read_round(max_records_per_shard=3)  # 3 of the parent's 8, then: split
        records = [record for shard in first.shards for record in shard.records]
        kinesis.split()
        for n, key in enumerate(keys):
            kinesis.put(key, f"{key}-after", kinesis.children[n % 2])

        records += drain(source)  # the same reader: its parent iterator is from before

        payloads = [record["Data"].decode() for record in records]
        expected = [f"{key}-{when}" for key in keys for when in ("before", "after")]
        assert sorted(payloads) == sorted(expected)  # each once
        order: dict[str, list[str]] = defaultdict(list)
        for payload in payloads:
            key, when = payload.rsplit("-", 1)
            order[key].append(when)
        assert all(whens == ["before", "after"] for whens in order.values())
        assert source.finished == {kinesis.parent}
    finally:
        client.delete_stream(StreamName=stream)


def test_throttled_reads_on_the_endpoint_are_retried_and_skip_nothing(
    stream_config: WeirConfig,
) -> None:
    puts = put(stream_config, [f'{{"event_id": "t{n}"}}' for n in range(10)])
    throttling = Faulty(kinesis_client(stream_config), throttled_calls=4)
    waits: list[float] = []
    source = KinesisShardReader(
        throttling, stream_config.sources.kinesis.stream, "TRIM_HORIZON", wait=waits.append
    )

    records = drain(source)

    assert throttling.throttled == 4 and waits == [0.1, 0.2, 0.4, 0.8]
    assert sorted(r["SequenceNumber"] for r in records) == sorted(p.sequence_number for p in puts)


def one_shard_puts(config: WeirConfig, count: int) -> list[tuple[str, str, str]]:
    """``count`` records on the stream's first shard, oldest first."""
    client = kinesis_client(config)
    first = client.list_shards(StreamName=config.sources.kinesis.stream)["Shards"][0]
    stream = config.sources.kinesis.stream
    out = []
    for n in range(count):
        answer = client.put_record(
            StreamName=stream,
            Data=f'{{"event_id": "s{n}"}}'.encode(),
            PartitionKey=f"k{n}",
            ExplicitHashKey=first["HashKeyRange"]["StartingHashKey"],
        )
        out.append((answer["ShardId"], answer["SequenceNumber"], f"s{n}"))
    return out


def test_a_position_older_than_the_trim_horizon_fails_loudly_naming_the_gap(
    stream_config: WeirConfig,
) -> None:
    (shard, s0, _), (_, s1, _), (_, s2, _) = one_shard_puts(stream_config, 3)
    client = Faulty(kinesis_client(stream_config), trimmed_through={shard: s1})

    with pytest.raises(KinesisDataLossError) as lost:
        reader(stream_config, client, positions={shard: s0}).read_round(10)
    message = str(lost.value)
    assert f"shard {shard} was trimmed" in message and s0 in message and s2 in message
    assert "sources.kinesis.fail_on_data_loss: false" in message

    # A position still retained is no gap: reading goes on after it.
    read = reader(stream_config, client, positions={shard: s2}).read_round(10)
    assert read.record_count == 0

    # Accepted: the gap is kept for the archiver to record, and reading goes on from the
    # oldest retained record.
    accepting = reader(stream_config, client, positions={shard: s0}, fail_on_data_loss=False)
    read = accepting.read_round(10)
    assert [r["SequenceNumber"] for s in read.shards for r in s.records] == [s2]
    [gap] = accepting.take_gaps()
    assert (gap.shard_id, gap.after_sequence_number, gap.before_sequence_number) == (shard, s0, s2)
    assert gap.kind == TRIMMED_POSITION


def test_a_parent_shard_that_expired_before_it_was_read_to_its_end_fails_loudly(
    stream_config: WeirConfig,
) -> None:
    (parent, s0, _), _ = one_shard_puts(stream_config, 2)
    client = kinesis_client(stream_config)
    stream = stream_config.sources.kinesis.stream
    shard = next(
        s for s in client.list_shards(StreamName=stream)["Shards"] if s["ShardId"] == parent
    )
    low, high = (int(shard["HashKeyRange"][k]) for k in ("StartingHashKey", "EndingHashKey"))
    client.split_shard(
        StreamName=stream, ShardToSplit=parent, NewStartingHashKey=str((low + high) // 2)
    )
    wait_stream_active(client, stream, "the split done")
    expired = Faulty(client, expired=frozenset({parent}))

    with pytest.raises(KinesisDataLossError, match=f"shard {parent} expired as a parent shard"):
        reader(stream_config, expired, positions={parent: s0}).read_round(10)

    accepting = reader(stream_config, expired, positions={parent: s0}, fail_on_data_loss=False)
    accepting.read_round(10)
    [gap] = accepting.take_gaps()
    assert (gap.shard_id, gap.after_sequence_number, gap.kind) == (parent, s0, EXPIRED_PARENT_SHARD)


def test_with_fail_on_data_loss_false_a_trimmed_gap_is_recorded_and_the_rest_archived(
    spark: SparkSession, stream_config: WeirConfig
) -> None:
    lake = LakeLayout.from_config(stream_config)
    ensure_stream_tables(spark, lake)
    (shard, s0, _), (_, s1, _) = one_shard_puts(stream_config, 2)
    first = KinesisArchiver(
        spark, lake, stream_config.sources.kinesis, kinesis_client(stream_config)
    )
    first.recover()
    first.run_round()
    (_, s2, _), (_, s3, _) = one_shard_puts(stream_config, 2)
    # Retention trimmed s0..s2 while the archiver was stopped: s2 was never read.
    trimmed = Faulty(kinesis_client(stream_config), trimmed_through={shard: s2})

    strict = KinesisArchiver(spark, lake, stream_config.sources.kinesis, trimmed)
    strict.recover()
    with pytest.raises(KinesisDataLossError, match=f"after sequence number {s1} up to {s3}"):
        strict.run_round()
    assert [p.sequence_number for p in archived(spark, lake)] == [s0, s1]

    accepting_config = with_kinesis(stream_config, fail_on_data_loss=False)
    accepting = KinesisArchiver(spark, lake, accepting_config.sources.kinesis, trimmed)
    accepting.recover()
    accepting.run_round()

    assert sorted(p.sequence_number for p in archived(spark, lake)) == sorted([s0, s1, s3])
    gaps = [
        (r.stream, r.shard_id, r.after_sequence_number, r.before_sequence_number, r.kind)
        for r in spark.read.format("delta").load(lake.kinesis_gaps).collect()
    ]
    stream = stream_config.sources.kinesis.stream
    assert gaps == [(stream, shard, s1, s3, TRIMMED_POSITION)]
    assert_raw_is_valid_plus_quarantine(spark, lake)


# --- kill -9 -------------------------------------------------------------------------------------


def test_a_killed_archiver_process_restarts_at_once_to_a_clean_run(
    spark: SparkSession, stream_config: WeirConfig, tmp_path: Path
) -> None:
    # The process kills itself (SIGKILL, its JVM with it) right after round 0's RAW commit,
    # before QUARANTINE's: the worst moment, and its fence is never released.
    config = stream_config
    lake = LakeLayout.from_config(config)
    puts = put(config, [json.dumps({"event_id": f"k{n}"}) for n in range(5)] + ["not json"])
    stream = StreamProcess(
        config, tmp_path, "kinesis", env={CRASH_ENV: crashpoints.KINESIS_RAW_COMMITTED}
    )
    assert stream.process.wait(timeout=300) == -signal.SIGKILL, stream.output[-3000:]
    fence = archiver_fence(config.sources.kinesis.stream)
    dead = read_lease(LocalFenceStore(lake.writer_fences), fence)
    assert (dead.host, dead.pid, dead.released_at) == (
        socket.gethostname(),
        stream.process.pid,
        None,
    )

    # Its heartbeat is fresh, but its process is gone from this host: no wait for the timeout.
    run_kinesis_stream(spark, config, available_now=True)

    assert archived(spark, lake) == sorted(puts)
    assert_raw_is_valid_plus_quarantine(spark, lake)
    assert read_lease(LocalFenceStore(lake.writer_fences), fence).epoch == dead.epoch + 1


# --- SIGTERM -------------------------------------------------------------------------------------


def test_sigterm_lets_the_running_round_commit_then_stops_and_releases_the_fence(
    spark: SparkSession, stream_config: WeirConfig
) -> None:
    # In this process (the handler is the CLI's, installed on the main thread): the first
    # signal only sets the stop event, so nothing of the shared session is interrupted.
    config = stream_config.model_copy(
        update={"timing": stream_config.timing.model_copy(update={"trigger_interval_seconds": 1})}
    )
    lake = LakeLayout.from_config(config)
    puts = put(config, [json.dumps({"event_id": f"t{n}"}) for n in range(4)])
    original = KinesisArchiver.run_round
    outcomes = []

    def round_then_sigterm(self: KinesisArchiver) -> Any:
        if not outcomes:  # the signal arrives while the first round is being read
            os.kill(os.getpid(), signal.SIGTERM)
        outcomes.append(original(self))
        return outcomes[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(KinesisArchiver, "run_round", round_then_sigterm)
        results = []
        run_until_stopped(
            lambda stop: results.append(run_kinesis_stream(spark, config, stop=stop)),
            "the current round",
        )

    assert results[0].stopped_by_signal
    assert [o.records for o in outcomes] == [4]  # the round finished, no other began
    assert archived(spark, lake) == sorted(puts)
    fence = read_lease(
        LocalFenceStore(lake.writer_fences), archiver_fence(config.sources.kinesis.stream)
    )
    assert fence.released_at is not None


def test_a_second_sigterm_stops_the_process_at_once_and_a_restart_loses_nothing(
    spark: SparkSession, stream_config: WeirConfig, tmp_path: Path
) -> None:
    # The archiver is held right after round 0's RAW commit (before QUARANTINE's): the first
    # signal cannot let it finish, the second interrupts it there, the worst moment.
    config = stream_config.model_copy(
        update={"timing": stream_config.timing.model_copy(update={"trigger_interval_seconds": 1})}
    )
    lake = LakeLayout.from_config(config)
    puts = put(config, [json.dumps({"event_id": f"a{n}"}) for n in range(4)] + ["not json"])
    stream = StreamProcess(
        config, tmp_path, "kinesis", env={HOLD_ENV: crashpoints.KINESIS_RAW_COMMITTED}
    )
    try:
        stream.wait_for(lambda: rows_committed(lake, config.sources.kinesis.stream) == 5, "round 0")
        puts += put(config, [json.dumps({"event_id": f"b{n}"}) for n in range(4)])
        stream.process.send_signal(signal.SIGTERM)
        # Two signals sent at once can reach the handler as one: wait until the first was seen.
        stream.wait_for(lambda: "SIGTERM: stopping after" in stream.output, "the first SIGTERM")
        stream.process.send_signal(signal.SIGTERM)
        # Held, the round can never finish: only the second signal can end the process.
        stream.process.wait(timeout=120)
    finally:
        stream.kill()
    assert "SIGTERM: stopping after" in stream.output
    assert stream.process.returncode == 130  # interrupted, not reported as success

    run_kinesis_stream(spark, config, available_now=True)

    assert archived(spark, lake) == sorted(puts)
    assert_raw_is_valid_plus_quarantine(spark, lake)  # round 0's quarantine was completed
