"""The batch layer: the authoritative per-minute view, rebuilt from the raw zone (docs/batch.md).

* :mod:`~weir.layers.batch.request`: the arguments of a run, validated (cutoff, mode, dates);
* :mod:`~weir.layers.batch.transforms`: pure transforms (what a run reads, winners, dates);
* :mod:`~weir.layers.batch.plan`: the baseline, what is new since it, which dates to rebuild;
* :mod:`~weir.layers.batch.index`: incremental runs folded into the event index;
* :mod:`~weir.layers.batch.tables`: the atomic writes of the view and the index;
* :mod:`~weir.layers.batch.adopt`: ``--input``, adopting a lake of raw files into RAW;
* :mod:`~weir.layers.batch.run`: ``rebuild_batch``, a run from request to run record.
"""

from weir.layers.batch.adopt import Adoption, adopt_files
from weir.layers.batch.request import (
    RebuildRequest,
    batch_horizon,
    default_cutoff,
    input_uri,
    parse_cutoff,
    rebuild_request,
)
from weir.layers.batch.run import rebuild_batch
from weir.layers.batch.transforms import (
    event_index_rows,
    first_received_events,
    received_before,
)

__all__ = [
    "Adoption",
    "RebuildRequest",
    "adopt_files",
    "batch_horizon",
    "default_cutoff",
    "event_index_rows",
    "first_received_events",
    "input_uri",
    "parse_cutoff",
    "rebuild_batch",
    "rebuild_request",
    "received_before",
]
