"""Named places where a job can be made to crash on purpose, for the crash tests.

Exactly-once is a claim about every moment a job can die; most of those moments are too short
to hit by timing. Each name below marks one of them in the code. The environment decides:

* ``WEIR_CRASH_AT=<name>``: the process kills itself with SIGKILL (no clean-up, no finally
  blocks, the JVM with it) the first time it reaches that point;
* ``WEIR_HOLD_AT=<name>``: the thread that reaches that point waits there for good, so a test
  can be sure some other write has not happened yet when the crash comes.

Unset (always, outside tests), a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import threading

CRASH_ENV = "WEIR_CRASH_AT"
HOLD_ENV = "WEIR_HOLD_AT"

# The archiver committed its RAW append for a micro-batch (QUARANTINE may or may not have).
RAW_COMMITTED = "raw-committed"
# The Kinesis archiver committed a round to RAW, not yet to QUARANTINE.
KINESIS_RAW_COMMITTED = "kinesis-raw-committed"
# The speed layer is about to append a micro-batch's window versions to SPEED.
SPEED_BEFORE_WRITE = "speed-before-write"
# A complete batch run committed its event index; its view commit has not happened.
BATCH_INDEX_COMMITTED = "batch-index-committed"
# A batch run is done (view committed, if it changed) and about to record itself.
BATCH_BEFORE_RECORD = "batch-before-record"
# A merge committed to the unified table (or had nothing to commit) and is about to record itself.
MERGE_BEFORE_RECORD = "merge-before-record"

POINTS = (
    RAW_COMMITTED,
    KINESIS_RAW_COMMITTED,
    SPEED_BEFORE_WRITE,
    BATCH_INDEX_COMMITTED,
    BATCH_BEFORE_RECORD,
    MERGE_BEFORE_RECORD,
)

_never = threading.Event()


def crash_point(name: str) -> None:
    """Crash or hold here if the environment asks for ``name``; otherwise do nothing."""
    if os.environ.get(HOLD_ENV) == name:
        _never.wait()
    if os.environ.get(CRASH_ENV) == name:
        # A job a test started in a session of its own leads its process group: the kill
        # takes the JVM the driver started with it, as a machine failure would.
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
