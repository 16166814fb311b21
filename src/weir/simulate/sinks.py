"""Where simulated records go: a Kafka topic, a Kinesis stream or the landing folder.

Every sink reports each record it was handed exactly once to its ledger: ``acknowledged``
(with the record's partition and offset) once the destination confirmed it, or ``failed``
(with the error) once the sink gave up. Nothing is silently lost: :meth:`flush` returns the
number of records still unconfirmed, which is 0 unless the destination stopped answering.

Endpoints and names come from the configuration only: ``sources.kafka`` (bootstrap servers,
topic, security), ``sources.kinesis`` (stream, region, endpoint) with ``aws`` (endpoint and
keys), and the lake layout's landing folder (``LakeLayout.landing``).
"""

from __future__ import annotations

import logging
import os
import random
import time
import zlib
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timezone
from itertools import chain, repeat
from operator import is_not, itemgetter
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import numpy as np

from weir.config import ConfigError, WeirConfig
from weir.errors import WeirError
from weir.lake import LakeLayout, local_path
from weir.simulate.stream import Batch, SimRecord

KAFKA = "kafka"
KINESIS = "kinesis"
FILES = "files"
SINKS = (KAFKA, KINESIS, FILES)


class Acknowledger(Protocol):
    """What a sink reports to (weir.simulate.ledger.Ledger)."""

    def acknowledged(self, record: SimRecord, partition: Any, offset: Any) -> None: ...

    def acknowledged_many(self, rows: list[tuple[SimRecord, Any, Any]]) -> None: ...

    def acknowledged_lines(self, records: list[SimRecord], path: str) -> None: ...

    def acknowledged_batch(
        self, batch: Batch, partitions: Any, offsets: Any, acked: Optional[list] = None
    ) -> None: ...

    def failed(self, record: SimRecord, error: str) -> None: ...


class Sink(Protocol):
    name: str
    target: str  # topic, stream or landing folder, for the run's manifest

    def send(self, records: Sequence[SimRecord], clock_us: int) -> None:
        """Hand records over (``clock_us``: the run's simulated arrival time)."""

    def poll(self) -> None:
        """Serve acknowledgements without blocking (call while idle)."""

    def flush(self, timeout_s: float) -> int:
        """Deliver everything handed over; returns how many records are still unconfirmed."""

    def close(self) -> None: ...


# --- Kafka ---------------------------------------------------------------------------------------
# librdkafka settings for throughput with safety: large lz4 batches, idempotent delivery (no
# duplicates or reordering from the producer's own retries: the only duplicates are the ones
# the simulator means), and a bounded delivery timeout after which a record is reported failed.
# A linger of 100 ms rather than 20 fills larger batches at high rates: fewer requests for
# librdkafka and the broker to handle (2M records at full speed, taking turns on one broker:
# 157-169k/s against 153-158k/s); at everyday rates it only delays a record by that much.
KAFKA_PRODUCER_SETTINGS: dict[str, Any] = {
    "client.id": "weir-simulate",
    "linger.ms": 100,
    "batch.size": 1_000_000,
    "batch.num.messages": 10_000,
    "compression.type": "lz4",
    "enable.idempotence": True,
    "acks": "all",
    "queue.buffering.max.messages": 500_000,
    "queue.buffering.max.kbytes": 512 * 1024,
    "message.timeout.ms": 60_000,
}
KAFKA_METADATA_TIMEOUT_S = 10.0
_kafka_log = logging.getLogger("weir.simulate.kafka")
_POLL_EVERY = 1000


def kafka_client_settings(config: WeirConfig) -> dict[str, Any]:
    """Bootstrap servers and security for a librdkafka client, from ``sources.kafka``."""
    kafka = config.sources.kafka
    settings: dict[str, Any] = {"bootstrap.servers": kafka.bootstrap_servers}
    security = kafka.security
    if security.protocol != "PLAINTEXT":
        settings["security.protocol"] = security.protocol
    if security.sasl_mechanism == "AWS_MSK_IAM":
        raise ConfigError(
            "sources.kafka.security.sasl_mechanism",
            "AWS_MSK_IAM is not supported by the simulator's producer; use SCRAM-SHA-512",
        )
    if security.sasl_mechanism:
        settings["sasl.mechanism"] = security.sasl_mechanism
    return settings


class _InFlight:
    """A batch handed to the producer, and what its delivery reports said so far."""

    __slots__ = ("batch", "errors", "keys", "offsets", "partitions", "unsettled")

    def __init__(self, batch: Batch, partitions: np.ndarray, keys: list[bytes]) -> None:
        self.batch = batch
        self.partitions = partitions
        self.keys = keys  # as produced
        self.offsets = np.full(len(batch), -1, dtype=np.int64)
        self.errors: dict[int, str] = {}  # index in the batch -> delivery error
        self.unsettled = len(batch)


class _Router(dict):
    """Device id -> (key bytes, partition), computed on first use (CRC32 of the key modulo the
    partition count: librdkafka's ``consistent`` partitioner)."""

    def __init__(self, partitions: int) -> None:
        super().__init__()
        self.partitions = partitions

    def __missing__(self, device_id: str) -> tuple[bytes, int]:
        key = device_id.encode()
        route = self[device_id] = (key, zlib.crc32(key) % self.partitions)
        return route


class KafkaSink:
    """confluent_kafka.Producer; a record is acknowledged by its delivery report.

    Each device's records go to one partition, CRC32 of the key modulo the partition count
    (librdkafka's ``consistent`` partitioner), chosen here: the idempotent producer reports
    deliveries in produce order per partition, so the reports of a partition, taken in order,
    belong to its in-flight records in order (a key check per partition and hand-over fails
    loudly if that order were ever broken). A batch is produced by one C-level loop over its
    columns; the producer-wide delivery callback only keeps the report, and reports are
    matched to records in bulk when the sink polls. A batch goes to the ledger once every
    record in it is settled, batches in the order they were sent.
    """

    name = KAFKA

    def __init__(
        self,
        config: WeirConfig,
        ledger: Acknowledger,
        producer: Any = None,
        device_ids: Optional[Sequence[str]] = None,
    ) -> None:
        """``device_ids``: a fleet's, when every batch sent carries its devices as indexes into
        them (the batches of a RecordStream): records are then routed by index, with no
        lookup by key."""
        from confluent_kafka import KafkaException, Message, Producer

        kafka = config.sources.kafka
        self.topic = kafka.topic
        self.target = f"{kafka.bootstrap_servers}/{kafka.topic}"
        self.ledger = ledger
        self._message = Message
        # Delivery reports land here, one C-level append each (through the callback below).
        self._reports: list = []
        keep = self._reports.append
        self._producer = producer or Producer(
            {
                **KAFKA_PRODUCER_SETTINGS,
                **kafka_client_settings(config),
                "on_delivery": lambda error, message: keep(message),
                "logger": _kafka_log,  # librdkafka's own logs via logging, not stderr
            }
        )
        # Fail before anything is written: the broker answers and the topic exists.
        try:
            metadata = self._producer.list_topics(self.topic, timeout=KAFKA_METADATA_TIMEOUT_S)
        except KafkaException as error:
            raise WeirError(
                f"no Kafka broker answered at {kafka.bootstrap_servers} "
                f"(sources.kafka.bootstrap_servers; is `weir infra up` running?): {error}"
            ) from None
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise WeirError(
                f"Kafka topic {self.topic!r} is not available at {kafka.bootstrap_servers} "
                f"(sources.kafka.topic): {topic.error if topic else 'unknown topic'}"
            )
        self.partitions = len(topic.partitions)
        self._routes = _Router(self.partitions)
        self._device_routes: Optional[tuple[list[bytes], np.ndarray]] = None
        if device_ids is not None:
            routes = [self._routes[device_id] for device_id in device_ids]
            self._device_routes = (
                [key for key, _ in routes],
                np.array([partition for _, partition in routes], dtype=np.int64),
            )
        self._batches: deque[_InFlight] = deque()  # in the order sent
        # Per partition: (in-flight batch, its indexes in that partition, how many reported).
        self._queues: list[deque] = [deque() for _ in range(self.partitions)]
        # Never more in librdkafka's queue than it takes (no BufferError in the common case).
        self._room = int(KAFKA_PRODUCER_SETTINGS["queue.buffering.max.messages"]) - _POLL_EVERY
        self._unsettled = 0
        self._kafka_exception = KafkaException
        self.sent = 0

    def send(self, records: Sequence[SimRecord], clock_us: int) -> None:
        batch = Batch.of(records)
        size = len(batch)
        if not size:
            return
        while self._unsettled + size > self._room:
            self._producer.poll(0.05)  # serve delivery reports until librdkafka has room
            self._hand_over()
        if self._device_routes is None:
            routes = list(map(self._routes.__getitem__, batch.keys))
            keys = [route[0] for route in routes]
            by_partition = np.fromiter(map(itemgetter(1), routes), np.int64, len(routes))
        else:
            device_keys, device_partitions = self._device_routes
            keys = list(map(device_keys.__getitem__, batch.devices))
            by_partition = device_partitions[batch.devices]
        in_flight = _InFlight(batch, by_partition, keys)
        self._batches.append(in_flight)
        self._unsettled += size
        batch.crc32s()  # for the ledger, while the payloads are at hand
        for partition in range(self.partitions):
            indexes = np.flatnonzero(by_partition == partition)
            if len(indexes):
                # Queued before producing: reports may come while a full queue is served.
                entry = [in_flight, indexes, 0]
                self._queues[partition].append(entry)
                self._produce(entry, partition, keys)
        self.sent += size
        self._producer.poll(0)
        self._hand_over()

    def _produce(self, entry: list, partition: int, keys: list) -> None:
        """Produce a batch's records of one partition (``entry``: its queue entry), in order.

        A C-level loop over ``produce`` (positional arguments; ``produce_batch`` with a dict
        per message cost the sender child 7% more CPU, taking turns on one broker). On a full
        local queue (which the room kept in :meth:`send` should prevent), serve delivery
        reports and go on from the record that did not fit; a record librdkafka refuses
        outright is reported failed, and taken out of the entry before any report could be
        matched to its place.
        """
        in_flight, indexes = entry[0], entry[1]
        order = indexes.tolist()
        payloads = in_flight.batch.payloads
        values = [payloads[i] for i in order]
        partition_keys = [keys[i] for i in order]
        produce, topic = self._producer.produce, self.topic
        refused: list[int] = []  # positions in order
        first = 0
        while first < len(values):
            pending = iter(values[first:] if first else values)
            try:
                deque(
                    map(produce, repeat(topic), pending, partition_keys[first:], repeat(partition)),
                    0,
                )
                return
            except BufferError:
                first = len(values) - pending.__length_hint__() - 1  # the one that did not fit
                self._producer.poll(0.05)
                self._hand_over()
            except self._kafka_exception as error:
                position = len(values) - pending.__length_hint__() - 1
                refused.append(position)
                entry[1] = np.delete(indexes, refused)
                in_flight.errors[order[position]] = str(error.args[0] if error.args else error)
                in_flight.unsettled -= 1
                self._unsettled -= 1
                first = position + 1

    def _hand_over(self) -> None:
        """Match the delivery reports kept so far to their records; settled batches (in the
        order sent) go to the ledger."""
        reports = self._reports
        if reports:
            reports_now = reports[:]
            del reports[:]
            self._match(reports_now)
        batches = self._batches
        while batches and not batches[0].unsettled:
            self._settle(batches.popleft())

    def _match(self, reports: list) -> None:
        message = self._message
        partitions = np.fromiter(map(message.partition, reports), np.int64, len(reports))
        offsets = list(map(message.offset, reports))
        errors = list(map(message.error, reports))
        # (KafkaError cannot be compared with None: identity, C-level)
        failed = any(map(is_not, errors, repeat(None)))
        if failed or None in offsets:  # a failed delivery has no offset
            offsets = [-1 if offset is None else offset for offset in offsets]
        offsets = np.array(offsets, dtype=np.int64)
        for partition in np.unique(partitions).tolist():
            positions = np.flatnonzero(partitions == partition)
            queue = self._queues[partition]
            taken = 0
            while taken < len(positions):
                if not queue:
                    raise WeirError(
                        f"Kafka delivery report on partition {partition} for no record sent"
                    )
                entry = queue[0]
                in_flight, indexes, done = entry
                if done == len(indexes):  # every record of it was refused at produce time
                    queue.popleft()
                    continue
                count = min(len(indexes) - done, len(positions) - taken)
                mine = indexes[done : done + count]
                theirs = positions[taken : taken + count]
                # The first report of each run must carry its record's key: deliveries out
                # of order would make the ledger wrong, and they would show systematically.
                if reports[theirs[0]].key() != in_flight.keys[mine[0]]:
                    raise WeirError(
                        f"Kafka delivery reports out of order on partition {partition}: the "
                        "ledger cannot be trusted (is enable.idempotence on?)"
                    )
                in_flight.offsets[mine] = offsets[theirs]
                if failed:
                    for index, position in zip(mine.tolist(), theirs.tolist()):
                        if errors[position] is not None:
                            in_flight.errors[index] = str(errors[position])
                in_flight.unsettled -= count
                self._unsettled -= count
                taken += count
                if done + count == len(indexes):
                    queue.popleft()
                else:
                    entry[2] = done + count

    def _settle(self, in_flight: _InFlight, partial: bool = False) -> None:
        """Hand a batch's delivered records to the ledger (and its failures); ``partial``: some
        are still unreported (the run is ending without them)."""
        batch, errors = in_flight.batch, in_flight.errors
        acked = None
        if errors or partial:
            acked = (in_flight.offsets >= 0).tolist()
            for index in errors:
                acked[index] = False
        self.ledger.acknowledged_batch(batch, in_flight.partitions, in_flight.offsets, acked)
        for index, error in sorted(errors.items()):
            self.ledger.failed(batch[index], error)

    def poll(self) -> None:
        self._producer.poll(0)
        self._hand_over()

    def flush(self, timeout_s: float) -> int:
        remaining = self._producer.flush(timeout_s)
        self._hand_over()
        return remaining

    def close(self) -> None:
        self._producer.flush(0)
        self._hand_over()
        # Whatever was delivered is in the ledger, even from batches not wholly settled.
        while self._batches:
            self._settle(self._batches.popleft(), partial=True)
        self._producer = None  # the producer holds our callback: free it now


# --- Kinesis -------------------------------------------------------------------------------------
KINESIS_MAX_RECORDS = 500  # PutRecords limits
KINESIS_MAX_REQUEST_BYTES = 5 * 1024 * 1024
KINESIS_MAX_RECORD_BYTES = 1024 * 1024
# Errors worth another try, for a single record or for the whole call.
RETRYABLE_ERRORS = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "InternalFailure",
        "KMSThrottlingException",
        "LimitExceededException",
        "ThrottlingException",
        "ServiceUnavailable",
        "InternalServerError",
    }
)


def kinesis_client(config: WeirConfig) -> Any:
    """A boto3 Kinesis client for ``sources.kinesis`` (endpoint falls back to ``aws``)."""
    from weir.aws import aws_client

    return aws_client(
        config,
        "kinesis",
        endpoint_url=config.sources.kinesis.endpoint_url,
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
    )


class UnansweredCallError(Exception):
    """A PutRecords answer without a result per record sent.

    A dropped connection can end that way (seen under `weir chaos --source kinesis`): the
    call's outcome is unknown, so it is retried like connection trouble — a copy in the
    stream if the first call had landed, which a Kinesis producer is allowed (at-least-once).
    """

    def __init__(self, sent: int, answered: int) -> None:
        super().__init__(f"answered {answered} of the {sent} records sent")


class KinesisSink:
    """PutRecords in batches of up to 500; partition key = device id (spread over shards).

    Throttled or failed records (``FailedRecordCount``) are retried, alone, with exponential
    backoff and jitter, up to ``max_attempts`` calls; then each is reported failed.
    """

    name = KINESIS

    def __init__(
        self,
        config: WeirConfig,
        ledger: Acknowledger,
        client: Any = None,
        max_attempts: int = 10,
        base_backoff_s: float = 0.05,
        max_backoff_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self._call_errors = (BotoCoreError, ClientError)
        self.stream = config.sources.kinesis.stream
        self.client = client or kinesis_client(config)
        endpoint = config.sources.kinesis.endpoint_url or config.aws.endpoint_url or "AWS"
        self.target = f"{endpoint}/{self.stream}"
        self.ledger = ledger
        self.max_attempts = max_attempts
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._jitter = random.Random()
        self._buffer: list[SimRecord] = []
        self._buffer_bytes = 0
        self.calls = 0
        self.retried = 0
        try:
            summary = self.client.describe_stream_summary(StreamName=self.stream)
        except self._call_errors as error:
            raise WeirError(
                f"Kinesis stream {self.stream!r} is not available at {endpoint} "
                f"(sources.kinesis.stream; is `weir infra up` running?): {error}"
            ) from None
        self.shards = summary["StreamDescriptionSummary"].get("OpenShardCount")

    def send(self, records: Sequence[SimRecord], clock_us: int) -> None:
        for record in records:
            size = len(record.payload) + len(record.key.encode())
            if size > KINESIS_MAX_RECORD_BYTES:
                self.ledger.failed(record, f"record of {size} bytes exceeds Kinesis' 1 MiB")
                continue
            if self._buffer and (
                len(self._buffer) >= KINESIS_MAX_RECORDS
                or self._buffer_bytes + size > KINESIS_MAX_REQUEST_BYTES
            ):
                self._put_buffer()
            self._buffer.append(record)
            self._buffer_bytes += size
        if len(self._buffer) >= KINESIS_MAX_RECORDS:
            self._put_buffer()

    def poll(self) -> None:
        self._put_buffer()

    def flush(self, timeout_s: float) -> int:
        self._put_buffer()
        return 0  # PutRecords is synchronous: every record was acknowledged or failed

    def close(self) -> None:
        self._put_buffer()

    def _backoff(self, attempt: int) -> None:
        ceiling = min(self.max_backoff_s, self.base_backoff_s * 2**attempt)
        self._sleep(ceiling * self._jitter.uniform(0.5, 1.0))

    def _put_buffer(self) -> None:
        batch, self._buffer, self._buffer_bytes = self._buffer, [], 0
        attempt = 0
        while batch:
            self.calls += 1
            try:
                response = self.client.put_records(
                    StreamName=self.stream,
                    Records=[{"Data": r.payload, "PartitionKey": r.key} for r in batch],
                )
                answers = response.get("Records")
                if answers is None or len(answers) != len(batch):
                    raise UnansweredCallError(len(batch), 0 if answers is None else len(answers))
            except (*self._call_errors, UnansweredCallError) as error:
                code = getattr(error, "response", {}).get("Error", {}).get("Code", "")
                retryable = code in RETRYABLE_ERRORS or not code  # no code: connection trouble
                if retryable and attempt + 1 < self.max_attempts:
                    attempt += 1
                    self._backoff(attempt)
                    continue
                for record in batch:
                    self.ledger.failed(
                        record, f"PutRecords failed after {attempt + 1} calls: {error}"
                    )
                return
            retry: list[SimRecord] = []
            acknowledged = []
            for record, result in zip(batch, answers):
                code = result.get("ErrorCode")
                if code is None:
                    acknowledged.append((record, result["ShardId"], result["SequenceNumber"]))
                elif code in RETRYABLE_ERRORS and attempt + 1 < self.max_attempts:
                    retry.append(record)
                else:
                    self.ledger.failed(
                        record,
                        f"{code}: {result.get('ErrorMessage', '')} (after {attempt + 1} calls)",
                    )
            self.ledger.acknowledged_many(acknowledged)
            if retry:
                attempt += 1
                self.retried += len(retry)
                self._backoff(attempt)
            batch = retry


# --- Landing folder (Firehose-style) -------------------------------------------------------------
FILES_MAX_BYTES = 5 * 1024 * 1024  # Firehose's default buffer size
FILE_PREFIX = "weir"


def landing_relative_path(opened_us: int, nonce: str, number: int) -> str:
    """``YYYY/MM/DD/HH/weir-YYYY-MM-DD-HH-MM-SS-<nonce>-NNNNNN.jsonl`` (UTC), like a Firehose key.

    Paths sort in write order within a run: time first, then the file number.
    """
    moment = datetime.fromtimestamp(opened_us / 1e6, tz=timezone.utc)
    return (
        f"{moment:%Y/%m/%d/%H}/{FILE_PREFIX}-{moment:%Y-%m-%d-%H-%M-%S}-{nonce}-{number:06d}.jsonl"
    )


class FilesSink:
    """JSON lines under the landing folder, one file per buffer, each appearing atomically.

    A file holds the records of at most ``roll_seconds`` of the run's clock (and one UTC hour,
    the partition of its path) or ``max_bytes``; local files are written aside and renamed,
    S3 objects are put whole. A record is acknowledged when its file is in place.
    """

    name = FILES

    def __init__(
        self,
        config: WeirConfig,
        ledger: Acknowledger,
        nonce: str,
        roll_seconds: float = 60.0,
        max_bytes: int = FILES_MAX_BYTES,
        s3_client: Any = None,
    ) -> None:
        self.target = LakeLayout.from_config(config).landing
        self.ledger = ledger
        self.nonce = nonce
        self.roll_us = int(roll_seconds * 1e6)
        self.max_bytes = max_bytes
        self.files_written = 0
        self._batches: list[Batch] = []
        self._bytes = 0
        self._opened_us = 0
        if self.target.startswith("file://"):
            self._folder: Optional[Path] = Path(local_path(self.target))
            self._s3 = None
        else:
            self._folder = None
            bucket, _, prefix = self.target.split("://", 1)[1].partition("/")
            self._bucket, self._prefix = bucket, prefix.strip("/")
            self._s3 = s3_client or _s3_client(config)

    def send(self, records: Sequence[SimRecord], clock_us: int) -> None:
        if self._batches and (
            clock_us - self._opened_us >= self.roll_us
            or clock_us // 3_600_000_000 != self._opened_us // 3_600_000_000
        ):
            self._write()
        if not self._batches:
            self._opened_us = clock_us
        batch = Batch.of(records)
        while len(batch):
            size = sum(map(len, batch.payloads)) + len(batch)
            if self._bytes + size < self.max_bytes:
                self._batches.append(batch)
                self._bytes += size
                return
            # The file fills up inside this batch: up to the record that reaches max_bytes.
            taken = 0
            for payload in batch.payloads:
                taken += 1
                self._bytes += len(payload) + 1
                if self._bytes >= self.max_bytes:
                    break
            self._batches.append(batch[:taken])
            self._write()
            self._opened_us = clock_us
            batch = batch[taken:]

    def poll(self) -> None:
        pass

    def flush(self, timeout_s: float) -> int:
        self._write()
        return 0

    def close(self) -> None:
        self._write()

    def _write(self) -> None:
        batches, self._batches, self._bytes = self._batches, [], 0
        if not batches:
            return
        relative = landing_relative_path(self._opened_us, self.nonce, self.files_written)
        data = b"\n".join(chain.from_iterable(b.payloads for b in batches)) + b"\n"
        if self._folder is not None:
            target = self._folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            # A dot-file is skipped by Spark's file sources until it is renamed into place.
            partial_file = target.with_name(f".{target.name}.partial")
            with open(partial_file, "wb") as handle:
                handle.write(data)
            os.replace(partial_file, target)
        else:
            key = f"{self._prefix}/{relative}" if self._prefix else relative
            self._s3.put_object(Bucket=self._bucket, Key=key, Body=data)
        self.files_written += 1
        line = 1
        for batch in batches:
            self.ledger.acknowledged_batch(batch, relative, range(line, line + len(batch)))
            line += len(batch)


def _s3_client(config: WeirConfig) -> Any:
    from weir.aws import aws_client

    return aws_client(config, "s3")
