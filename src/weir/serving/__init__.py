"""The serving layer: one unified ``telemetry_minute`` table from the batch and speed views.

* :mod:`~weir.serving.rule`: the serving rule (BATCH up to H, SPEED beyond) and the scope of
  an incremental merge, pure;
* :mod:`~weir.serving.changes`: the diff against the table and the one MERGE that applies it;
* :mod:`~weir.serving.merge`: ``run_merge``, one merge from pinned inputs to its run record;
* :mod:`~weir.serving.loop`: ``weir merge --follow | --every``, merges beside a stream.

The catalog that makes the tables queryable is :mod:`weir.catalog`; the run records are in
:mod:`weir.control`.
"""

from weir.serving.loop import follow_merges, merge_interval, run_merges
from weir.serving.merge import run_merge
from weir.serving.rule import MergeScope, merge_scope, serving_rule

__all__ = [
    "MergeScope",
    "follow_merges",
    "merge_interval",
    "merge_scope",
    "run_merge",
    "run_merges",
    "serving_rule",
]
