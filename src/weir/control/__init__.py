"""The ``_control`` tables: the record of every run, read by the runs that follow.

* ``_control/batch_runs`` (:mod:`weir.control.batch_runs`): each batch rebuild, its cutoff and
  the horizon H the merge serves batch rows up to;
* ``_control/merge_runs`` (:mod:`weir.control.merge_runs`): each merge, the versions it read;
* ``_control/stream_progress`` (:mod:`weir.control.stream_progress`): each micro-batch.

What the run tables share (statuses, run ids, the portable reader) is in
:mod:`weir.control.runs`.
"""

from weir.control.batch_runs import (
    COMPLETE_MODES,
    MODE_FULL,
    MODE_INCREMENTAL,
    MODE_RANGE,
    BatchRun,
    batch_runs,
    latest_batch_run,
    record_batch_run,
)
from weir.control.merge_runs import MergeRun, latest_merge_run, merge_runs, record_merge_run
from weir.control.runs import RUN_FAILED, RUN_SUCCEEDED, portable_columns, utc_values
from weir.control.stream_progress import latest_progress, stream_status

__all__ = [
    "COMPLETE_MODES",
    "MODE_FULL",
    "MODE_INCREMENTAL",
    "MODE_RANGE",
    "RUN_FAILED",
    "RUN_SUCCEEDED",
    "BatchRun",
    "MergeRun",
    "batch_runs",
    "latest_batch_run",
    "latest_merge_run",
    "latest_progress",
    "merge_runs",
    "portable_columns",
    "record_batch_run",
    "record_merge_run",
    "stream_status",
    "utc_values",
]
