"""Stopping a long-running command (a stream, a merge loop) between units of work."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("weir")


@contextmanager
def stop_on_signals(
    stop: threading.Event, finishing: str = "the current micro-batch"
) -> Iterator[threading.Event]:
    """SIGTERM and SIGINT set ``stop``; a second one raises KeyboardInterrupt at once.

    ``finishing`` says in the log what the command completes before it stops. Signal
    handlers can only be installed from the main thread: elsewhere ``stop`` is returned
    untouched, for the caller to set.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {number: signal.getsignal(number) for number in signals}

    def request_stop(number: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info(
            "%s: stopping after %s (again to interrupt it)", signal.Signals(number).name, finishing
        )
        stop.set()

    for number in signals:
        signal.signal(number, request_stop)
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
