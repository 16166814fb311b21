"""The sinks, end to end: what lands in the folder, the stream or the topic equals the ledger."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from simulate.conftest import (
    START,
    START_US,
    crc,
    landed_lines,
    landing_folder,
    ledger_coordinates,
    read_json,
    read_topic,
    spec,
    with_overrides,
)
from weir.cli import main
from weir.config import WeirConfig
from weir.infra.process import wait_until
from weir.simulate import ledger as L
from weir.simulate import sinks as S
from weir.simulate.faults import FaultMix
from weir.simulate.run import SimulateOptions, run_simulation
from weir.simulate.stream import stream_records

START_TEXT = "2026-03-01T12:00:00Z"
FIREHOSE_PATH = re.compile(
    r"^(\d{4})/(\d{2})/(\d{2})/(\d{2})/weir-(\d{4})-(\d{2})-(\d{2})-(\d{2})-\d{2}-\d{2}"
    r"-[0-9a-f]{6}-\d{6}\.jsonl$"
)
WEIR = str(Path(sys.executable).parent / "weir")


def write_conf(config: WeirConfig, folder: Path) -> str:
    path = folder / "weir.yaml"
    path.write_text(yaml.safe_dump(config.model_dump()), "utf-8")
    return str(path)


def only_run(config: WeirConfig) -> Path:
    (run,) = sorted(L.ledger_root(config.infra.state_dir).iterdir())
    return run


# --- files ---------------------------------------------------------------------------------------
def files_run(config: WeirConfig, **options: Any):
    defaults = dict(devices=50, rate=0, count=2000, sink="files", seed=5, start=START)
    return run_simulation(
        config, SimulateOptions(**{**defaults, **options}), now=START + timedelta(minutes=5)
    )


def test_files_land_under_firehose_style_hour_prefixes_and_equal_the_ledger(
    sim_config: WeirConfig,
) -> None:
    result = files_run(sim_config, roll_seconds=10, faults=FaultMix.preset("heavy"))
    assert result.status == L.COMPLETED and result.acknowledged == 2000
    lines = landed_lines(sim_config)
    files = {path for path, _ in lines}
    assert len(files) >= 3  # 40 s of clock, 10 s per file
    for path in files:
        match = FIREHOSE_PATH.match(path)
        assert match, path
        assert match.groups()[:4] == match.groups()[4:]  # the prefix is the file's own hour
    folder = landing_folder(sim_config)
    assert not [p for p in folder.rglob(".*")]  # no partial file left behind
    ledger = ledger_coordinates(L.read_ledger(result.ledger_dir))
    assert {k: v[1] for k, v in ledger.items()} == {k: crc(v) for k, v in lines.items()}


def test_a_landing_file_ends_with_the_record_that_reaches_its_byte_limit(
    sim_config: WeirConfig, tmp_path: Path
) -> None:
    records = stream_records(spec(seed=4, devices=50, mix="heavy"), 1200)
    ledger = L.Ledger(tmp_path / "run", {"run_id": "run"})
    sink = S.FilesSink(sim_config, ledger, "abc123", roll_seconds=3600, max_bytes=20_000)
    sink.send(records[:700], START_US)
    sink.send(records[700:], START_US)
    sink.close()
    ledger.close(L.COMPLETED)
    lines = landed_lines(sim_config)  # (file, line number) -> line, files in write order
    files = list(dict.fromkeys(path for path, _ in lines))
    assert len(files) == sink.files_written > 5
    assert list(lines.values()) == [r.payload for r in records]
    for path in files[:-1]:  # each full file: the limit reached by its last line, not before
        size = (landing_folder(sim_config) / path).stat().st_size
        last = max(int(number) for file, number in lines if file == path)
        assert size >= 20_000 > size - len(lines[(path, str(last))]) - 1
    expected = {where: (r.key, crc(r.payload)) for where, r in zip(lines, records)}
    assert ledger_coordinates(L.read_ledger(ledger.folder)) == expected


def test_landing_files_appear_atomically(sim_config: WeirConfig, monkeypatch) -> None:
    renames = []
    real_replace = os.replace

    def watching_replace(source, target) -> None:
        source, target = Path(source), Path(target)
        renames.append((source, target, target.exists(), source.read_bytes()))
        real_replace(source, target)

    monkeypatch.setattr(S.os, "replace", watching_replace)
    files_run(sim_config, count=600, roll_seconds=5)
    landed_files = [(s, t, e, b) for s, t, e, b in renames if t.suffix == ".jsonl"]
    assert len(landed_files) >= 2
    for source, target, existed, content in landed_files:
        assert source.parent == target.parent and source.name.startswith(".")
        assert not existed and content == target.read_bytes() and content.endswith(b"\n")


def test_same_seed_and_start_land_the_same_bytes(tmp_path: Path, sim_config: WeirConfig) -> None:
    contents = []
    for name in ("first", "second"):
        config = with_overrides(
            sim_config,
            lake={"root": f"file://{tmp_path}/{name}/lake"},
            infra={"state_dir": str(tmp_path / name / "state")},
        )
        (tmp_path / name).mkdir()
        args = ["simulate", "--conf", write_conf(config, tmp_path / name)]
        args += ["--sink", "files", "--seed", "5", "--start", START_TEXT, "--count", "1500"]
        args += ["--rate", "0", "--devices", "30", "--fault-mix", "heavy"]
        assert main(args) == 0
        folder = landing_folder(config)
        contents.append(b"".join(p.read_bytes() for p in sorted(folder.rglob("*.jsonl"))))
    assert contents[0] == contents[1] and contents[0].count(b"\n") == 1500


def test_backfill_writes_days_of_history_into_hourly_folders(
    tmp_path: Path, sim_config: WeirConfig
) -> None:
    conf = write_conf(sim_config, tmp_path)
    args = ["simulate", "--conf", conf, "--backfill", "1", "--devices", "10"]
    args += ["--interval", "300", "--start", START_TEXT, "--seed", "2", "--fault-mix", "none"]
    assert main(args) == 0
    run = only_run(sim_config)
    manifest = read_json(run / L.MANIFEST)
    assert manifest["sink"] == "files" and manifest["status"] == L.COMPLETED
    assert manifest["acknowledged"] == 10 * 24 * 12  # a report every 5 minutes for a day
    lines = landed_lines(sim_config)
    hours = {path[:13] for path, _ in lines}
    assert len(hours) == 24  # 2026/02/28/12 .. 2026/03/01/11
    assert min(hours) == "2026/02/28/12" and max(hours) == "2026/03/01/11"
    ledger = L.read_ledger(run).to_pylist()
    times = [row["event_time"].timestamp() * 1e6 for row in ledger]
    assert min(times) >= START_US - 86_400e6 and max(times) < START_US
    assert len(lines) == len(ledger)


def test_stopping_a_run_leaves_a_ledger_equal_to_the_landed_files(
    sim_config: WeirConfig,
) -> None:
    stop = threading.Event()
    outcome = {}

    def run() -> None:
        options = SimulateOptions(
            devices=20, rate=400, sink="files", seed=4, start=START, roll_seconds=1
        )
        outcome["result"] = run_simulation(sim_config, options, stop=stop)

    worker = threading.Thread(target=run)
    worker.start()
    folder = landing_folder(sim_config)
    wait_until(lambda: len(list(folder.rglob("*.jsonl"))) >= 3, timeout=60, what="3 files")
    stop.set()
    worker.join(timeout=60)
    assert not worker.is_alive()
    result = outcome["result"]
    assert result.status == L.INTERRUPTED
    assert result.generated == result.acknowledged > 0
    lines = landed_lines(sim_config)
    ledger = ledger_coordinates(L.read_ledger(result.ledger_dir))
    assert {k: v[1] for k, v in ledger.items()} == {k: crc(v) for k, v in lines.items()}


def test_bad_options_fail_before_anything_is_written(
    tmp_path: Path, sim_config: WeirConfig
) -> None:
    conf = write_conf(sim_config, tmp_path)
    for extra in (
        ["--sink", "pigeon"],
        ["--faults", "late=2"],
        ["--fault-mix", "spicy"],
        ["--duration", "soon"],
        ["--start", "2999-01-01T00:00:00Z"],
        ["--start", "2026-03-01T12:00:00"],
        ["--count", "5", "--duration", "5s"],
        ["--devices", "0"],
    ):
        assert main(["simulate", "--conf", conf, "--sink", "files", *extra]) == 2, extra
    assert not (tmp_path / "lake").exists()
    assert not L.ledger_root(sim_config.infra.state_dir).exists()


# --- Kinesis on a real moto server ---------------------------------------------------------------
@pytest.fixture
def kinesis_config(sim_config: WeirConfig, moto_endpoint: str) -> WeirConfig:
    """A fresh 2-shard stream of this test's own on the session's moto server."""
    name = f"telemetry-{uuid.uuid4().hex[:8]}"
    config = with_overrides(
        sim_config,
        kinesis={"stream": name, "endpoint_url": moto_endpoint, "shards": 2},
        aws={
            "endpoint_url": moto_endpoint,
            "access_key_id": "testing",
            "secret_access_key": "testing",
        },
    )
    client = S.kinesis_client(config)
    client.create_stream(StreamName=name, ShardCount=2)
    wait_until(
        lambda: (
            client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"][
                "StreamStatus"
            ]
            == "ACTIVE"
        ),
        timeout=30,
        what=f"stream {name} active",
    )
    return config


def read_stream(config: WeirConfig) -> dict[tuple[str, str], tuple[str, int]]:
    """(shard id, sequence number) -> (partition key, crc32 of data), over every shard."""
    client = S.kinesis_client(config)
    stream = config.sources.kinesis.stream
    records = {}
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        iterator = client.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = client.get_records(ShardIterator=iterator, Limit=10_000)
            for record in page["Records"]:
                key = (shard["ShardId"], record["SequenceNumber"])
                records[key] = (record["PartitionKey"], crc(record["Data"]))
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
    return records


def kinesis_run(config: WeirConfig, sink_factory=None, **options: Any):
    defaults = dict(devices=60, rate=0, count=1500, sink="kinesis", seed=3, start=START)
    kwargs = {"sink_factory": sink_factory} if sink_factory else {}
    return run_simulation(
        config,
        SimulateOptions(**{**defaults, **options}, faults=FaultMix.preset("heavy")),
        now=START + timedelta(minutes=5),
        **kwargs,
    )


def test_kinesis_holds_exactly_the_ledger_across_both_shards(kinesis_config) -> None:
    result = kinesis_run(kinesis_config)
    assert result.status == L.COMPLETED and result.acknowledged == 1500
    in_stream = read_stream(kinesis_config)
    assert len({shard for shard, _ in in_stream}) == 2  # device keys spread over the shards
    assert ledger_coordinates(L.read_ledger(result.ledger_dir)) == in_stream


class WrappedKinesis:
    """A real client, its PutRecords calls counted; subclasses change what PutRecords does."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = 0

    def describe_stream_summary(self, **kwargs):
        return self.real.describe_stream_summary(**kwargs)


class FlakyKinesis(WrappedKinesis):
    """A real client whose PutRecords throttles: a whole call now and then, some records often."""

    def __init__(self, real: Any, fail_every: int = 3, give_up_on=lambda payload: False):
        super().__init__(real)
        self.fail_every = fail_every
        self.give_up_on = give_up_on

    def put_records(self, StreamName: str, Records: list) -> dict:  # noqa: N803 (boto3's names)
        from botocore.exceptions import ClientError

        self.calls += 1
        if self.calls == 2:
            error = {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}
            raise ClientError({"Error": error}, "PutRecords")
        failing = [
            (self.fail_every and index % self.fail_every == 0 and self.calls % 2 == 1)
            or self.give_up_on(record["Data"])
            for index, record in enumerate(Records)
        ]
        passed = [record for record, fail in zip(Records, failing) if not fail]
        answers = iter(
            self.real.put_records(StreamName=StreamName, Records=passed)["Records"]
            if passed
            else []
        )
        results = [
            {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"}
            if fail
            else next(answers)
            for fail in failing
        ]
        return {"FailedRecordCount": sum(failing), "Records": results}


def test_kinesis_retries_throttled_and_partially_failed_records_until_sent(kinesis_config) -> None:
    waits: list[float] = []
    sinks = []

    def flaky_sink(config, plan, ledger, nonce):
        client = FlakyKinesis(S.kinesis_client(config))
        sinks.append(S.KinesisSink(config, ledger, client=client, sleep=waits.append))
        return sinks[-1]

    result = kinesis_run(kinesis_config, sink_factory=flaky_sink)
    assert result.status == L.COMPLETED and result.acknowledged == result.generated == 1500
    (sink,) = sinks
    assert sink.retried > 0 and len(waits) >= 2 and all(0 < w <= 5 for w in waits)
    assert ledger_coordinates(L.read_ledger(result.ledger_dir)) == read_stream(kinesis_config)


class AnswerlessKinesis(WrappedKinesis):
    """A real client whose second PutRecords comes back without its per-record answers (what a
    dropped connection produced under chaos), having sent nothing."""

    def put_records(self, StreamName: str, Records: list) -> dict:  # noqa: N803 (boto3's names)
        self.calls += 1
        if self.calls == 2:
            return {"ResponseMetadata": {"HTTPStatusCode": 200}}
        return self.real.put_records(StreamName=StreamName, Records=Records)


def test_kinesis_sends_again_a_call_answered_without_its_records(kinesis_config) -> None:
    def answerless_sink(config, plan, ledger, nonce):
        client = AnswerlessKinesis(S.kinesis_client(config))
        return S.KinesisSink(config, ledger, client=client, sleep=lambda _: None)

    result = kinesis_run(kinesis_config, sink_factory=answerless_sink)
    assert result.status == L.COMPLETED and result.acknowledged == result.generated == 1500
    assert ledger_coordinates(L.read_ledger(result.ledger_dir)) == read_stream(kinesis_config)


def test_kinesis_reports_records_it_gave_up_on_and_loses_none(kinesis_config) -> None:
    records = stream_records_for_kinesis()
    doomed = {r.payload for r in records[::97]}
    hopeless = sum(1 for r in records if r.payload in doomed)  # exact retries share bytes

    def hopeless_sink(config, plan, ledger, nonce):
        client = FlakyKinesis(
            S.kinesis_client(config), fail_every=0, give_up_on=doomed.__contains__
        )
        return S.KinesisSink(config, ledger, client=client, max_attempts=3, sleep=lambda s: None)

    result = kinesis_run(kinesis_config, sink_factory=hopeless_sink)
    assert result.status == L.FAILED
    assert result.failed == hopeless and result.acknowledged + result.failed == 1500
    failures = L.read_failures(result.ledger_dir)
    assert len(failures) == hopeless
    assert all("ProvisionedThroughputExceededException" in f["error"] for f in failures)
    assert ledger_coordinates(L.read_ledger(result.ledger_dir)) == read_stream(kinesis_config)


def stream_records_for_kinesis():
    """The records kinesis_run sends (the same spec: a run is deterministic)."""
    return stream_records(spec(seed=3, devices=60, mix="heavy"), 1500)


# --- Kafka on the local broker -------------------------------------------------------------------
class FakeProducer:
    """The surface of confluent_kafka.Producer the Kafka sink uses, for one topic of two
    partitions: produce refuses the payloads in ``refuse`` outright and, once, reports a
    full local queue at the ``full_at``-th message; poll() delivers everything queued
    (offsets from 100 per partition) except the payloads in ``fail``, which fail."""

    def __init__(self, refuse=(), fail=(), full_at=None) -> None:
        self.refuse, self.fail, self.full_at = set(refuse), set(fail), full_at
        self.queued: list[tuple[int, dict]] = []
        self.offsets = {0: 100, 1: 100}
        self.produced = 0
        self.reports: list = []  # the sink's report list, set once the sink exists

    def list_topics(self, topic: str, timeout: float):
        from types import SimpleNamespace

        partitions = {0: None, 1: None}
        return SimpleNamespace(topics={topic: SimpleNamespace(partitions=partitions, error=None)})

    def produce(self, topic: str, value: bytes, key: bytes, partition: int) -> None:
        from confluent_kafka import KafkaError, KafkaException

        if self.full_at is not None and self.produced >= self.full_at:
            self.full_at = None
            raise BufferError("Local: Queue full")
        self.produced += 1
        if value in self.refuse:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.queued.append((partition, {"value": value, "key": key}))

    def poll(self, timeout: float = 0) -> int:
        from confluent_kafka import KafkaError, Message

        queued, self.queued = self.queued, []
        for partition, message in queued:
            failed = message["value"] in self.fail
            offset = -1001 if failed else self.offsets[partition]
            self.offsets[partition] += 0 if failed else 1
            error = KafkaError(KafkaError._MSG_TIMED_OUT) if failed else None
            self.reports.append(
                Message(
                    topic="t",
                    partition=partition,
                    offset=offset,
                    key=message["key"],
                    value=message["value"],
                    error=error,
                )
            )
        return len(queued)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0


class RecordingProducer(FakeProducer):
    """A FakeProducer that keeps (partition, key, value) of every message produced."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[int, bytes, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes, partition: int) -> None:
        self.sent.append((partition, key, value))
        super().produce(topic, value, key, partition)


def test_kafka_sink_routes_a_fleets_batches_by_device_index_as_it_does_by_key(
    weir_config: WeirConfig, tmp_path: Path
) -> None:
    from weir.simulate.fleet import fleet_device_ids
    from weir.simulate.stream import Batch

    the_spec = spec(seed=6, devices=40, mix="heavy")
    records = stream_records(the_spec, 300)  # copies included: a copy keeps its device
    produced, ledgers = [], []
    for name, device_ids in (("by-key", None), ("by-index", fleet_device_ids(40, 6))):
        producer = RecordingProducer()
        ledger = L.Ledger(tmp_path / name, {"run_id": name})
        sink = S.KafkaSink(weir_config, ledger, producer=producer, device_ids=device_ids)
        producer.reports = sink._reports
        batch = Batch.of(records)
        if device_ids is not None:  # keys the sink must not route by
            columns = batch.record_columns()
            batch = Batch(batch.first, batch.devices, ["x"] * len(batch), batch.payloads, *columns)
        sink.send(batch, 0)
        produced.append(producer.sent)
        assert sink.flush(1) == 0
        sink.close()
        ledger.close(L.COMPLETED)
        ledgers.append(L.read_ledger(ledger.folder).select(["seq", "partition", "offset"]))
    assert produced[0] == produced[1]
    assert {key for _, key, _ in produced[0]} == {r.key.encode() for r in records}
    assert ledgers[0].equals(ledgers[1]) and ledgers[0].num_rows == len(records)


def test_kafka_sink_matches_reports_to_records_in_bulk_and_reports_refusals_and_failures(
    weir_config: WeirConfig, tmp_path: Path
) -> None:
    import zlib

    records = stream_records(spec(seed=5, devices=30, mix="heavy"), 400)
    refused, failed = records[17], records[210]  # payloads sent once (no copies)
    producer = FakeProducer(refuse=[refused.payload], fail=[failed.payload], full_at=150)
    ledger = L.Ledger(tmp_path / "run", {"run_id": "run"}, rows_per_part=64)
    sink = S.KafkaSink(weir_config, ledger, producer=producer)
    producer.reports = sink._reports
    sink.send(records[:100], 0)
    sink.send(records[100:], 0)  # the queue fills once in here: the sink resumes in order
    assert sink.flush(1) == 0
    sink.close()
    manifest = ledger.close(L.FAILED)

    assert producer.full_at is None  # the full queue did happen
    assert manifest["acknowledged"] == 398 and manifest["failed"] == 2
    assert {f["seq"] for f in L.read_failures(ledger.folder)} == {refused.seq, failed.seq}
    rows = L.read_ledger(ledger.folder).to_pylist()
    assert [row["seq"] for row in rows] == [
        r.seq for r in records if r.seq not in (refused.seq, failed.seq)
    ]
    # Each partition's offsets follow the order its records were generated in, from 100 on.
    by_seq = {r.seq: r for r in records}
    for partition in ("0", "1"):
        mine = [row for row in rows if row["partition"] == partition]
        assert [int(row["offset"]) for row in mine] == list(range(100, 100 + len(mine)))
        for row in mine:
            record = by_seq[row["seq"]]
            assert zlib.crc32(record.key.encode()) % 2 == int(partition)
            assert row["payload_crc32"] == crc(record.payload) and row["key"] == record.key


@pytest.mark.slow
def test_kafka_holds_exactly_the_records_the_ledger_lists(kafka_config: WeirConfig) -> None:
    options = SimulateOptions(
        devices=80, rate=0, count=5000, sink="kafka", seed=12, faults=FaultMix.preset("heavy")
    )
    result = run_simulation(kafka_config, options)
    assert result.status == L.COMPLETED and result.acknowledged == result.generated == 5000
    in_topic = read_topic(kafka_config)
    assert len(in_topic) == 5000
    assert ledger_coordinates(L.read_ledger(result.ledger_dir)) == in_topic
    assert len({partition for partition, _ in in_topic}) == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "rate",
    [
        "3000",  # records made in the sending process
        "0",  # at full speed: the producer in a process of its own (weir.simulate.transport)
    ],
)
def test_ctrl_c_leaves_a_ledger_equal_to_what_the_broker_holds(
    kafka_config: WeirConfig, tmp_path: Path, rate: str
) -> None:
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    transient_leadership = {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
    kafka = kafka_config.sources.kafka
    conf = write_conf(kafka_config, tmp_path)
    process = subprocess.Popen(
        [
            WEIR,
            "simulate",
            "--conf",
            conf,
            "--sink",
            "kafka",
            "--rate",
            rate,
            "--devices",
            "100",
            "--seed",
            "9",
            "--fault-mix",
            "heavy",
        ],
        env={**os.environ, "CI": "true"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    probe = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "probe"})
    try:

        def records_in_topic() -> int:
            assert process.poll() is None, process.communicate()
            try:
                return sum(
                    probe.get_watermark_offsets(TopicPartition(kafka.topic, p), timeout=5)[1]
                    for p in range(3)
                )
            except KafkaException as error:
                # A leader that is still moving answers NOT_LEADER_FOR_PARTITION, and librdkafka
                # does not flag a watermark query's error retriable: ask again.
                if error.args[0].code() not in transient_leadership:
                    raise
                return 0

        wait_until(lambda: records_in_topic() >= 3000, timeout=90, what="3000 records sent")
    finally:
        probe.close()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=150)
    assert process.returncode == 0, (out, err)
    run = only_run(kafka_config)
    manifest = read_json(run / L.MANIFEST)
    assert manifest["status"] == L.INTERRUPTED
    assert manifest["generated"] == manifest["acknowledged"] >= 3000
    assert ledger_coordinates(L.read_ledger(run)) == read_topic(kafka_config)


def test_progress_shows_on_a_terminal_only_and_never_under_ci(monkeypatch) -> None:
    from rich.console import Console

    import weir.cli.simulate as command

    monkeypatch.setattr(command, "console", Console(force_terminal=True))
    monkeypatch.delenv("CI", raising=False)
    assert command.interactive()
    monkeypatch.setenv("CI", "true")
    assert not command.interactive()
    monkeypatch.delenv("CI")
    monkeypatch.setattr(command, "console", Console(force_terminal=False))
    assert not command.interactive()
