"""The streaming side of the Lambda architecture: the raw archiver and the speed layer.

* :mod:`~weir.layers.streaming.run`: ``run_stream``, what `weir stream` runs;
* :mod:`~weir.layers.streaming.queries`: the two queries, starting, watching, stopping them;
* :mod:`~weir.layers.streaming.archiver`: RAW and QUARANTINE, exactly once per micro-batch;
* :mod:`~weir.layers.streaming.speed`: the speed view, upserted into SPEED;
* :mod:`~weir.layers.streaming.kinesis`: the local Kinesis archiver (shard positions in RAW);
* :mod:`~weir.layers.streaming.checkpoints`: the guard between checkpoints and Delta writes;
* :mod:`~weir.layers.streaming.progress`: one log line and one progress row per micro-batch.
"""

from weir.layers.streaming.queries import StreamResult
from weir.layers.streaming.run import run_stream

__all__ = ["StreamResult", "run_stream"]
