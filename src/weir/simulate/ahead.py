"""Making the records in a process of their own, ahead of the sender.

At full speed one simulator thread has two jobs: make the records (fleet, faults, JSON, about
3 µs a record) and send them (client, delivery reports, ledger, about 4 µs). A Python thread
cannot use the machine's other core, so a large run makes its records in a child process that
runs ahead of the sender by a bounded amount (:data:`AHEAD_BYTES` of batches); the parent only
sends and keeps the ledger. The child runs the same :class:`RecordStream` over the same spec,
so the records are the same bytes, in the same order, as in one process.

The child is ``python -m weir.simulate.ahead`` (not multiprocessing: its spawn re-imports the
caller's main script, which breaks any script without a ``__main__`` guard). The spec goes in
on its stdin; its stdout carries length-prefixed pickles: the device ids once, then every
tick's batch, compactly (device indexes as an integer array, the rest as lists). It runs in a
session of its own, so a terminal's Ctrl-C reaches only the parent (which stops taking
batches, flushes and closes the ledger), and ends when the parent closes it or is gone (its
next write fails).
"""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any, Optional

import numpy as np

from weir.errors import WeirError
from weir.simulate.frames import (
    FrameReader,
    FrameWriter,
    PipeClosedError,
    enlarge_pipe,
    join_lines,
    split_lines,
)
from weir.simulate.stream import Batch, RecordStream, StreamSpec

AHEAD_BYTES = 16 << 20  # batches waiting for the pipe at most (about 70 ticks of 1000 devices)
# How long the parent waits for a batch before serving its sink (delivery reports) again.
_WAIT_S = 0.005
_DEVICE_IDS, _BATCH, _FAILED = "device_ids", "batch", "failed"


def encode(time_us: int, batch: Batch) -> tuple:
    """A tick's batch as it crosses the pipe: keys as device indexes, the payloads joined
    (:func:`~weir.simulate.frames.join_lines`), the other columns as lists."""
    return (
        _BATCH,
        time_us,
        batch.first,
        np.array(batch.devices, dtype=np.int32),
        join_lines(batch.payloads),
        *batch.record_columns(),
        batch.crc32s(),
    )


def decode(message: tuple, device_ids: list[str]) -> tuple[int, Batch]:
    """``(tick time, batch)`` from :func:`encode`'s tuple."""
    _, time_us, first, devices, payloads, *columns, crc32s = message
    devices = devices.tolist()
    keys = list(map(device_ids.__getitem__, devices))
    return time_us, Batch(first, devices, keys, split_lines(payloads), *columns, crc32s=crc32s)


class GeneratorProcess:
    """The records of ``spec``, made by a child process; use as a context manager."""

    def __init__(self, spec: StreamSpec, ahead_bytes: int = AHEAD_BYTES) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "weir.simulate.ahead", str(ahead_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        fd = self._process.stdout.fileno()
        enlarge_pipe(fd)
        try:
            self._process.stdin.write(pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL))
            self._process.stdin.close()
        except BrokenPipeError:
            code = self._process.wait(timeout=10)
            raise WeirError(
                f"the simulator's generator process did not start (exit code {code})"
            ) from None
        self._reader = FrameReader(fd)
        self._device_ids: Optional[list[str]] = None

    def __enter__(self) -> GeneratorProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _next(self, idle: Callable[[], None], stop: threading.Event) -> Optional[tuple]:
        """The child's next message; None once ``stop`` is set. Serves ``idle`` meanwhile."""
        try:
            message = self._reader.next(idle, _WAIT_S, stop)
        except PipeClosedError:
            code = self._process.wait(timeout=10)
            raise WeirError(
                f"the simulator's generator process ended unexpectedly (exit code {code})"
            ) from None
        if message is not None and message[0] == _FAILED:
            raise WeirError(f"the simulator's generator process failed:\n{message[1]}")
        return message

    def batches(
        self, idle: Callable[[], None], stop: threading.Event
    ) -> Iterator[tuple[int, Batch]]:
        """``(tick time, batch)`` in stream order, until ``stop`` is set (endless otherwise).

        ``idle`` is called whenever the next batch is not there yet (the sink serves its
        delivery reports meanwhile)."""
        if self._device_ids is None:
            first = self._next(idle, stop)
            if first is None:
                return
            self._device_ids = first[1]
        device_ids = self._device_ids
        while (message := self._next(idle, stop)) is not None:
            yield decode(message, device_ids)

    def close(self) -> None:
        """Stop the child (it holds nothing worth keeping: the records are a function of the
        spec) and release the pipe."""
        if self._process.poll() is None:
            self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover (SIGTERM is not ignored)
            self._process.kill()
            self._process.wait(timeout=10)
        self._process.stdout.close()


def _child(ahead_bytes: int) -> None:
    """``python -m weir.simulate.ahead``: the spec from stdin, frames to stdout until the
    parent closes the pipe (or terminates the process)."""
    # Up to ``ahead_bytes`` of batches wait for the pipe; then the generator waits for the
    # parent. Once the parent is gone nobody will read: end at once.
    frames = FrameWriter(sys.stdout.fileno(), ahead_bytes, on_closed=lambda: os._exit(0))
    try:
        spec = pickle.loads(sys.stdin.buffer.read())
        stream = RecordStream(spec)
        frames.put((_DEVICE_IDS, list(stream.fleet.device_ids)))
        gc.disable()  # nothing here forms a cycle (as in the parent's loop)
        for tick, batch in stream.ticks():
            frames.put(encode(tick.time_us, batch))
    except BaseException:  # whatever it was, the parent must hear of it
        frames.put((_FAILED, traceback.format_exc()))
        frames.stop()
        sys.exit(1)


if __name__ == "__main__":
    _child(int(sys.argv[1]) if len(sys.argv) > 1 else AHEAD_BYTES)
