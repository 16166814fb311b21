"""Sending to Kafka from a child process, while this one makes the records and keeps the ledger.

At full speed a simulator thread has too much to do for one core: make the records (fleet,
faults, JSON), hand them to librdkafka, take a delivery report back for each (a Python object
per record, made by the client), match the reports to the records and keep the ledger. A
Python thread cannot use the machine's other core, so a large run into Kafka splits that work
between two processes along the narrowest seam there is:

* this process makes the records and keeps the ledger, as it would alone;
* a child process (``python -m weir.simulate.transport``) runs an ordinary
  :class:`~weir.simulate.sinks.KafkaSink`: the producer, its delivery reports and their
  matching to records.

Across the seam go only what each side lacks: to the child, a batch's payloads (one
newline-joined text) and device indexes; back, per settled batch, the payloads' CRC32s (made
there, where the payloads are at hand), partitions and offsets (integer arrays), then its
failures, all of which this process hands to its ledger with the records it kept. The record
columns the ledger needs never cross the pipe.

:class:`KafkaSenderProcess` is a sink like the others (``send``, ``poll``, ``flush``,
``close``), so a run, its pacing and its Ctrl-C handling do not change: the child runs in a
session of its own, so a terminal's Ctrl-C reaches only this process, which stops making
records, asks the child to flush, and closes the ledger with what was acknowledged. A child
that fails reports why; one that dies leaves its unsettled records unconfirmed (the run then
ends ``failed``, never with a record in the ledger the broker did not acknowledge). The child
ends by itself when this process is gone.
"""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import time
import traceback
import zlib
from collections import deque
from typing import Any, Optional

import numpy as np

from weir.config import WeirConfig
from weir.errors import WeirError
from weir.simulate.fleet import fleet_device_ids
from weir.simulate.frames import (
    FrameReader,
    FrameWriter,
    PipeClosedError,
    enlarge_pipe,
    join_lines,
    split_lines,
)
from weir.simulate.sinks import KAFKA, KafkaSink, kafka_client_settings
from weir.simulate.stream import Batch, SimRecord, StreamSpec

# How long either side waits for a message before serving its own work again.
_WAIT_S = 0.005
# The child's sink waits up to sinks.KAFKA_METADATA_TIMEOUT_S for the broker; starting the
# interpreter and importing take a second or two on top.
_START_TIMEOUT_S = 60.0
_FRAME_RECORDS = 1000  # records kept back at most before they go to the child
# Batches queued for the child at most before a send waits (about 280,000 records of the
# default fleet): the child works through a produce request's delivery reports in one go,
# and meanwhile this side goes on making records. The larger the queue, the less the machine
# sits idle while the child catches up (docs/simulator.md, "Progress and speed").
_QUEUED_BYTES = 64 << 20
_CLOSE_TIMEOUT_S = 60.0
_STOP_WRITING_S = 5.0
# Messages: to the child, then back.
_START, _BATCH, _FLUSH, _CLOSE = "start", "batch", "flush", "close"
_READY, _ACKED, _FAILED, _FLUSHED, _CLOSED, _ERROR = (
    "ready",
    "acked",
    "failed",
    "flushed",
    "closed",
    "error",
)
_PROCESS = "the simulator's Kafka sender process"


class KafkaSenderProcess:
    """A Kafka sink whose producer runs in a child process; see the module doc."""

    name = KAFKA

    def __init__(self, config: WeirConfig, ledger: Any, spec: StreamSpec) -> None:
        kafka = config.sources.kafka
        kafka_client_settings(config)  # bad settings fail here, before a process starts
        self.target = f"{kafka.bootstrap_servers}/{kafka.topic}"
        self.ledger = ledger
        self.sent = 0
        self._in_flight = _InFlight()
        # Small batches (a small fleet's ticks, a paced run's slices) are kept back and handed
        # over together: a message costs about as much as a thousand records in it.
        self._pending: list[Batch] = []
        self._pending_records = 0
        self._clock_us = 0
        self._gone = False  # the child failed or ended: nothing more will come from it
        self._failure: Optional[WeirError] = None  # found while taking settlements
        self._process = subprocess.Popen(
            [sys.executable, "-m", "weir.simulate.transport"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        to_child = self._process.stdin.fileno()
        enlarge_pipe(to_child)
        self._out = FrameWriter(to_child, max_bytes=_QUEUED_BYTES)
        self._reader = FrameReader(self._process.stdout.fileno())
        try:
            self._write((_START, config, spec.devices, spec.seed))
            self._wait_for(_READY, _START_TIMEOUT_S)
        except BaseException:
            self._end_child()
            raise

    # --- the sink -------------------------------------------------------------------------------
    def send(self, records: Any, clock_us: int) -> None:
        """Take ``records`` or raise, never both: a failure found after they were taken
        is raised by the next call (the run counts what a call that raised took as never
        handed over)."""
        self._raise_failure()
        batch = Batch.of(records)
        if not len(batch):
            return
        self._pending.append(batch)
        self._pending_records += len(batch)
        self._clock_us = clock_us
        if self._pending_records >= _FRAME_RECORDS:
            try:
                self._hand_over()
            except WeirError:
                self._pending.pop()
                self._pending_records -= len(batch)
                raise
        self._take_settlements()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _hand_over(self) -> None:
        """The batches kept back, as one, to the child."""
        if not self._pending:
            return
        batch = Batch.joined(self._pending)
        devices = np.array(batch.devices, dtype=np.int32)
        # Waits while _QUEUED_BYTES are queued: the child is behind, and that holds this
        # side back.
        self._write((_BATCH, self._clock_us, batch.first, devices, join_lines(batch.payloads)))
        self._pending, self._pending_records = [], 0
        self._in_flight.add(batch)  # (its settlement can only be read after this)
        self.sent += len(batch)

    def poll(self) -> None:
        """Hand over what was kept back (waiting only while the child is far behind), and
        take what the child has settled so far into the ledger."""
        self._raise_failure()
        self._hand_over()
        self._take_settlements()
        self._raise_failure()

    def _take_settlements(self) -> None:
        """What the child has settled so far, into the ledger; a failure is kept for the
        next :meth:`send` or :meth:`poll` to raise."""
        reader = self._reader
        try:
            while not self._gone:
                message = reader.message()
                if message is None:
                    if not self._read(0):
                        return
                    continue
                self._handle(message)
        except WeirError as failure:
            self._gone = True
            self._failure = failure

    def flush(self, timeout_s: float) -> int:
        """Records not yet confirmed once the child has flushed its producer (``timeout_s``)."""
        if not self._gone:
            try:
                self._hand_over()
                self._write((_FLUSH, timeout_s))
                return int(self._wait_for(_FLUSHED, timeout_s + _CLOSE_TIMEOUT_S)[1])
            except WeirError:
                pass  # the child is gone: what it did not settle stays unconfirmed
        return self._in_flight.records + self._pending_records

    def close(self) -> None:
        """Let the child settle what it can (partly delivered batches included) and end."""
        try:
            if not self._gone:
                self._write((_CLOSE,))
                self._wait_for(_CLOSED, _CLOSE_TIMEOUT_S)
        except WeirError:
            pass  # already reported, or the run is failing anyway
        finally:
            self._end_child()

    # --- the pipes ------------------------------------------------------------------------------
    def _write(self, message: tuple) -> None:
        try:
            self._out.put(message)
        except PipeClosedError:  # the child is gone (a broken pipe)
            self._gone = True
            raise WeirError(f"{_PROCESS} {self._ended()}") from None
        except BaseException:
            # Interrupted (a second Ctrl-C), maybe with the batch queued but not kept in
            # flight: the run ends the child instead of talking to it.
            self._gone = True
            raise

    def _read(self, timeout_s: Optional[float]) -> bool:
        try:
            return self._reader.read(timeout_s)
        except PipeClosedError:
            self._gone = True
            raise WeirError(f"{_PROCESS} {self._ended()}") from None

    def _ended(self) -> str:
        try:
            code = self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return "stopped answering"
        return f"ended unexpectedly (exit code {code})"

    def _wait_for(self, kind: str, timeout_s: float) -> tuple:
        """Serve the child's messages until one of ``kind`` comes; returns it."""
        deadline = time.monotonic() + timeout_s
        while True:
            message = self._reader.message()
            if message is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._gone = True
                    raise WeirError(f"{_PROCESS} did not answer within {timeout_s:.0f} s")
                self._read(min(remaining, 1.0))
                continue
            if message[0] == kind:
                return message
            self._handle(message)

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind in (_ACKED, _FAILED):
            self._in_flight.settle(message, self.ledger)
        elif kind == _ERROR:
            self._gone = True
            raise WeirError(message[1])
        else:
            raise WeirError(f"{_PROCESS} sent {kind!r} unasked")

    def _end_child(self) -> None:
        self._gone = True
        process = self._process
        # Nothing may be written to stdin once it is closed (its number could be reused by
        # then): the writer ends first, after the frame it is writing. A child that no
        # longer reads holds it in that write until the child is ended.
        if not self._out.stop(drop=True, timeout_s=_STOP_WRITING_S):
            process.kill()
            self._out.stop(drop=True, timeout_s=_STOP_WRITING_S)
        for stream in (process.stdin, process.stdout):
            with contextlib.suppress(OSError):  # a broken pipe: nothing left to flush to it
                stream.close()
        try:
            process.wait(timeout=_CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class _InFlight:
    """Batches handed to the child and not yet settled, in the order sent (the child's sink
    settles them in that order); what the child settles goes to a ledger with these records."""

    def __init__(self) -> None:
        self._batches: deque[Batch] = deque()
        self._settled: Optional[Batch] = None  # the batch settled last: its failures follow
        self.records = 0

    def add(self, batch: Batch) -> None:
        self._batches.append(batch)
        self.records += len(batch)

    def settle(self, message: tuple, ledger: Any) -> None:
        """An ``acked`` or ``failed`` message of the child's :class:`_Settlements`."""
        if message[0] == _FAILED:
            _, seq, error = message
            batch = self._settled
            if batch is None or seq not in batch.seqs:
                raise WeirError(f"{_PROCESS} reported a failure of seq {seq}, never settled")
            ledger.failed(batch[seq - batch.first], error)
            return
        _, first, size, crc32s, partitions, offsets, acked = message
        if not self._batches or self._batches[0].first != first:
            raise WeirError(f"{_PROCESS} settled records from seq {first} out of order")
        batch = self._batches.popleft()
        if size != len(batch):
            raise WeirError(f"{_PROCESS} settled {size} records of a batch of {len(batch)}")
        self.records -= size
        self._settled = batch
        batch.set_crc32s(crc32s)
        ledger.acknowledged_batch(batch, partitions, offsets, acked)


# --- the child ----------------------------------------------------------------------------------
class _Settlements:
    """The child's ledger: what its Kafka sink settles goes back to the parent's ledger."""

    def __init__(self, replies: FrameWriter) -> None:
        self._replies = replies

    def acknowledged_batch(
        self, batch: Batch, partitions: Any, offsets: Any, acked: Optional[list] = None
    ) -> None:
        self._replies.put(
            (_ACKED, batch.first, len(batch), batch.crc32s(), partitions, offsets, acked)
        )

    def failed(self, record: SimRecord, error: str) -> None:
        self._replies.put((_FAILED, record.seq, error))


def _sendable(first: int, devices: np.ndarray, payloads: Any) -> Batch:
    """A batch with what a Kafka sink routing by device index uses of it: device indexes and
    payloads, and the payloads' CRC32s for the parent's ledger (made here, where the payloads
    are at hand). The keys and record columns stay with the parent, which keeps the ledger."""
    size = len(devices)
    payloads = split_lines(payloads)
    unknown = [None] * size
    return Batch(
        first,
        devices.tolist(),
        unknown,
        payloads,
        *[unknown] * len(Batch.record_column_names()),
        crc32s=np.fromiter(map(zlib.crc32, payloads), dtype=np.int64, count=size),
    )


def _failure(error: BaseException) -> str:
    if isinstance(error, WeirError):
        return str(error)
    return f"{_PROCESS} failed:\n{traceback.format_exc()}"


def _child() -> None:
    """``python -m weir.simulate.transport``: batches from stdin, settlements to stdout."""
    reader = FrameReader(sys.stdin.fileno())
    # Never blocks: the parent may be blocked writing to us meanwhile. Once the parent is
    # gone nobody will read: end at once.
    replies = FrameWriter(sys.stdout.fileno(), on_closed=lambda: os._exit(0))
    try:
        _, config, devices, seed = reader.next(idle=lambda: None, wait_s=1.0)
        sink = KafkaSink(config, _Settlements(replies), device_ids=fleet_device_ids(devices, seed))
        replies.put((_READY,))
        gc.disable()  # nothing here forms a cycle (as in the parent's loop)
        while True:
            try:
                message = reader.next(idle=sink.poll, wait_s=_WAIT_S)
            except PipeClosedError:
                break  # the parent is gone: nobody will read the settlements
            kind = message[0]
            if kind == _BATCH:
                _, clock_us, first, devices, payloads = message
                sink.send(_sendable(first, devices, payloads), clock_us)
            elif kind == _FLUSH:
                replies.put((_FLUSHED, sink.flush(message[1])))
            elif kind == _CLOSE:
                sink.close()
                replies.put((_CLOSED,))
                break
    except BaseException as error:  # whatever it was, the parent must hear of it
        replies.put((_ERROR, _failure(error)))
        replies.stop()
        sys.exit(1)
    replies.stop()


if __name__ == "__main__":
    _child()
