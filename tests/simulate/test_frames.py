"""Frames on a pipe (weir.simulate.frames): a queued writer hands a reader whole messages in
order, holds the writing side back only once its bound is queued, and ends cleanly whether
the reader reads on, stops reading or is gone."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import pytest

from weir.simulate.frames import FrameReader, FrameWriter, PipeClosedError

MIB = 1 << 20


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):  # closed by the test
            os.close(fd)


def read_messages(read_end: int, count: int) -> list:
    reader, messages = FrameReader(read_end), []
    while len(messages) < count:
        message = reader.message()
        if message is None:
            reader.read(timeout_s=10)
        else:
            messages.append(message)
    return messages


def put_in_thread(writer: FrameWriter, message: object) -> threading.Thread:
    thread = threading.Thread(target=writer.put, args=(message,), daemon=True)
    thread.start()
    return thread


def test_messages_arrive_whole_and_in_the_order_put(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    writer = FrameWriter(write_end, max_bytes=MIB)
    sent = [("batch", number, bytes([number % 256]) * (number * 50_000)) for number in range(12)]
    received: list = []
    reading = threading.Thread(target=lambda: received.extend(read_messages(read_end, 12)))
    reading.start()
    for message in sent:
        writer.put(message)
    assert writer.stop(timeout_s=10)
    reading.join(timeout=10)
    assert received == sent


def test_a_put_waits_only_once_the_bound_is_queued(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    writer = FrameWriter(write_end, max_bytes=2 * MIB)
    # Nobody reads yet: the pipe fills, and these two wait in the queue, under its bound.
    for _ in range(2):
        writer.put(b"x" * (MIB // 2))
    blocked = put_in_thread(writer, b"y" * (2 * MIB))
    blocked.join(timeout=0.5)
    assert blocked.is_alive(), "a put beyond the bound returned while nothing was read"
    messages = read_messages(read_end, 3)
    blocked.join(timeout=10)
    assert not blocked.is_alive()
    assert [len(m) for m in messages] == [MIB // 2, MIB // 2, 2 * MIB]
    assert writer.stop(timeout_s=10)


def test_one_message_larger_than_the_bound_is_still_taken(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    writer = FrameWriter(write_end, max_bytes=1024)
    writer.put(b"z" * MIB)  # returns: the queue was empty
    assert read_messages(read_end, 1) == [b"z" * MIB]
    assert writer.stop(timeout_s=10)


def test_a_reader_that_is_gone_makes_the_next_put_fail(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    writer = FrameWriter(write_end, max_bytes=MIB)
    os.close(read_end)
    writer.put(b"lost")  # taken; its write fails on the writer's thread
    with pytest.raises(PipeClosedError):
        for _ in range(1000):  # until the failure is seen
            writer.put(b"more")
            threading.Event().wait(0.01)
    assert writer.error is not None
    assert writer.stop(timeout_s=10)


def test_stopping_drops_what_waits_once_the_frame_being_written_is_out(
    pipe: tuple[int, int],
) -> None:
    read_end, write_end = pipe
    writer = FrameWriter(write_end, max_bytes=64 * MIB)
    for number in range(4):
        writer.put((number, b"w" * MIB))  # the first fills the pipe: the writer is stuck in it
    assert not writer.stop(drop=True, timeout_s=0.5)  # held by a reader that does not read
    first = read_messages(read_end, 1)
    assert writer.stop(timeout_s=10)
    os.close(write_end)
    reader, rest = FrameReader(read_end), []
    with pytest.raises(PipeClosedError):
        while True:
            reader.read(timeout_s=10)
            while (message := reader.message()) is not None:
                rest.append(message)
    assert [number for number, _ in first + rest] == [0]


def test_a_writer_held_by_a_reader_that_is_gone_ends(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    writer = FrameWriter(write_end, max_bytes=64 * MIB)
    for _ in range(2):
        writer.put(b"w" * MIB)
    assert not writer.stop(drop=True, timeout_s=0.5)
    os.close(read_end)  # the write fails: nothing else is tried
    assert writer.stop(drop=True, timeout_s=10)
    assert isinstance(writer.error, OSError)


def test_an_unbounded_writer_never_holds_the_writing_side_back(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    writer = FrameWriter(write_end)  # nobody reads until every put has returned
    for number in range(16):
        writer.put((number, b"u" * MIB))
    assert [number for number, _ in read_messages(read_end, 16)] == list(range(16))
    assert writer.stop(timeout_s=10)
