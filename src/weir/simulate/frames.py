"""Messages between the simulator and its helper processes: length-prefixed pickles on a pipe.

A frame is an 8-byte little-endian length, then a pickle. Both ends are ours (the helper is
``python -m`` a module of this package, started by the same interpreter), so pickle is safe
here and the cheapest way to move numpy arrays and one large ``bytes`` across.

:class:`FrameReader` reads whatever the pipe holds in one call and takes whole messages out of
a buffer; while nothing is there it serves an ``idle`` callback (a sink's delivery reports), so
waiting never stalls the other work of the process. :class:`FrameWriter` writes from a thread
of its own, with or without a bound in bytes on what waits.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Optional

import numpy as np

_HEADER = struct.Struct("<Q")
_NEWLINE = ord("\n")
_READ_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031  # Linux: a larger pipe holds more messages in flight
PIPE_BYTES = 1 << 20  # measured best: 256 KiB, 2 MiB and 8 MiB were all slower (docs/simulator.md)


class PipeClosedError(Exception):
    """The other end closed the pipe (or its process ended)."""


def enlarge_pipe(fd: int) -> None:
    """Ask for a 1 MiB pipe (Linux); elsewhere a smaller one only means less in flight."""
    try:
        import fcntl

        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, OSError):
        pass


def frame(message: Any) -> bytes:
    """A message as the pipe carries it, less its length header."""
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def join_lines(payloads: list[bytes]) -> Any:
    """Payloads as they cross a pipe: one newline-joined text when none holds a newline (the
    other side splits it in one call; a list of bytes costs an object each way), else the
    list itself (a malformed record can hold a newline)."""
    joined = b"\n".join(payloads)
    # (numpy counts the newlines about 7 times faster than bytes.count)
    newlines = np.count_nonzero(np.frombuffer(joined, dtype=np.uint8) == _NEWLINE)
    return joined if newlines == len(payloads) - 1 else payloads


def split_lines(payloads: Any) -> list[bytes]:
    """The payloads :func:`join_lines` was given."""
    return payloads.split(b"\n") if isinstance(payloads, bytes) else payloads


def write_frame(fd: int, body: bytes) -> None:
    """Write one frame, blocking while the pipe is full. The header goes on its own: no copy
    of a quarter-megabyte body just to put eight bytes in front of it."""
    for part in (_HEADER.pack(len(body)), body):
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view) :]


class FrameReader:
    """Whole messages from a pipe's read end."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()
        self._position = 0  # where the next message starts in the buffer

    def message(self) -> Optional[Any]:
        """The next whole message already read, if there is one."""
        buffer, start = self._buffer, self._position
        if len(buffer) - start < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(buffer, start)
        end = start + _HEADER.size + size
        if len(buffer) < end:
            return None
        message = pickle.loads(memoryview(buffer)[start + _HEADER.size : end])
        self._position = end
        return message

    def read(self, timeout_s: Optional[float]) -> bool:
        """Read what the pipe holds, waiting up to ``timeout_s`` (None: until something comes);
        False if nothing came. Raises :class:`PipeClosedError` at the end of the stream."""
        if timeout_s is not None:
            readable, _, _ = select.select([self.fd], [], [], timeout_s)
            if not readable:
                return False
        data = os.read(self.fd, _READ_BYTES)
        if not data:
            raise PipeClosedError()
        # Drop what was consumed first: one move per read, not one per message.
        if self._position:
            del self._buffer[: self._position]
            self._position = 0
        self._buffer += data
        return True

    def next(
        self,
        idle: Callable[[], None],
        wait_s: float,
        stop: Optional[threading.Event] = None,
    ) -> Optional[Any]:
        """The next message, serving ``idle`` every ``wait_s`` while none is there; None once
        ``stop`` is set."""
        while stop is None or not stop.is_set():
            message = self.message()
            if message is not None:
                return message
            if not self.read(wait_s):
                idle()
        return None


class FrameWriter:
    """Frames written by a thread of its own, in the order put, up to ``max_bytes`` of them
    waiting (None: no bound).

    Unbounded, the process that owns it never blocks on a full pipe, so two processes writing
    to each other cannot deadlock. Bounded, the process that puts frames goes on while the
    reader works through a burst of its own (a Kafka producer's delivery reports come a
    request at a time) and waits in :meth:`put` only once that much is queued: the
    back-pressure. One frame is always taken, however large. Frames go out whole, so an
    interrupted :meth:`put` never leaves half a frame in the pipe. The fd stays open: whoever
    owns it closes it once :meth:`stop` returned True (nothing more will be written to it).
    """

    def __init__(
        self,
        fd: int,
        max_bytes: Optional[int] = None,
        on_closed: Optional[Callable[[], None]] = None,
    ) -> None:
        """``on_closed``: called on the writer thread if the reader is gone."""
        self.fd = fd
        self.max_bytes = max_bytes
        self._on_closed = on_closed
        self._frames: deque[bytes] = deque()
        self._queued = 0  # bytes in _frames
        self._state = threading.Condition()
        self._ending = False
        self.error: Optional[OSError] = None  # why writing stopped (the reader is gone)
        self._thread = threading.Thread(target=self._write, name="frames", daemon=True)
        self._thread.start()

    def _full(self, size: int) -> bool:
        limit = self.max_bytes
        return limit is not None and self._queued > 0 and self._queued + size > limit

    def put(self, message: Any) -> None:
        """Queue a message, waiting while ``max_bytes`` are queued; raises
        :class:`PipeClosedError` once a write has failed (nothing more gets through)."""
        body = frame(message)
        with self._state:
            while self._full(len(body)) and self.error is None:
                self._state.wait()
            if self.error is not None:
                raise PipeClosedError(str(self.error))
            self._frames.append(body)
            self._queued += len(body)
            self._state.notify_all()

    def _write(self) -> None:
        try:
            while True:
                with self._state:
                    while not self._frames and not self._ending:
                        self._state.wait()
                    if not self._frames:
                        return
                    body = self._frames[0]
                write_frame(self.fd, body)  # (the GIL is let go while the pipe is full)
                with self._state:
                    self._frames.popleft()
                    self._queued -= len(body)
                    self._state.notify_all()
        except OSError as error:
            if self._on_closed is not None:
                self._on_closed()
            with self._state:
                self.error = error
                self._frames.clear()
                self._queued = 0
                self._state.notify_all()

    def stop(self, drop: bool = False, timeout_s: float = 10.0) -> bool:
        """End the thread once what was put is written (``drop``: once the frame being
        written is); True when it has ended within ``timeout_s`` (a reader that stopped
        reading keeps it in a write until that reader is gone)."""
        with self._state:
            self._ending = True
            if drop and self._frames:
                current = self._frames.popleft()  # the one being written, if any, stays
                self._frames.clear()
                self._frames.append(current)
                self._queued = len(current)
            self._state.notify_all()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()
