"""Streaming observability: one log line per micro-batch and a Delta table of progress rows.

``ProgressRecorder`` is a ``StreamingQueryListener``. Spark calls it on its listener thread,
so it only logs and buffers; the driver loop calls ``flush()`` every few seconds to append
the buffered rows to ``_control/stream_progress`` (best effort: a failed flush keeps the
rows for the next one, and never stops ingestion). ``weir.control.stream_progress`` reads
them back (`weir stream status`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Optional

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQueryListener

from weir.schemas import STREAM_PROGRESS_PARTITION_COLUMNS, STREAM_PROGRESS_SCHEMA

log = logging.getLogger("weir.stream")

# Rows kept when flushes keep failing (oldest dropped first): about a day at a 5 s trigger.
MAX_BUFFERED_ROWS = 50_000
# How often a running stream appends its buffered progress rows.
PROGRESS_FLUSH_SECONDS = 10.0


def _timestamp(text: Optional[str]) -> Optional[datetime]:
    """Spark's progress timestamps (``2024-05-01T10:00:00.000Z``) as UTC datetimes."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def _offset_text(offset: Any) -> Optional[str]:
    if offset is None or isinstance(offset, str):
        return offset
    return json.dumps(offset, sort_keys=True)


def progress_row(progress: dict[str, Any]) -> dict[str, Any]:
    """A STREAM_PROGRESS_SCHEMA row from Spark's progress report (its JSON, as a dict). Pure."""
    sources = progress.get("sources") or [{}]
    source = sources[0]
    metrics = source.get("metrics") or {}
    behind = metrics.get("maxOffsetsBehindLatest")
    state = progress.get("stateOperators") or []
    trigger_time = _timestamp(progress["timestamp"])
    return {
        "query_name": progress.get("name") or "",
        "query_id": progress["id"],
        "run_id": progress["runId"],
        "batch_id": int(progress["batchId"]),
        "trigger_time": trigger_time,
        "num_input_rows": int(progress.get("numInputRows") or 0),
        "input_rows_per_second": float(progress.get("inputRowsPerSecond") or 0.0),
        "processed_rows_per_second": float(progress.get("processedRowsPerSecond") or 0.0),
        "batch_duration_ms": (progress.get("durationMs") or {}).get("triggerExecution"),
        "watermark": _timestamp((progress.get("eventTime") or {}).get("watermark")),
        "source_description": source.get("description"),
        "start_offset": _offset_text(source.get("startOffset")),
        "end_offset": _offset_text(source.get("endOffset")),
        "latest_offset": _offset_text(source.get("latestOffset")),
        "offsets_behind_latest": None if behind is None else int(float(behind)),
        "state_rows": sum(int(op.get("numRowsTotal") or 0) for op in state) if state else None,
        "progress_json": json.dumps(progress, sort_keys=True),
        "progress_date": trigger_time.date(),
    }


def progress_line(row: dict[str, Any]) -> str:
    """The one log line of a micro-batch."""
    parts = [
        f"{row['query_name']} batch {row['batch_id']}:",
        f"{row['num_input_rows']} rows",
        f"{row['processed_rows_per_second']:.0f} rows/s",
        f"in {(row['batch_duration_ms'] or 0) / 1000:.2f}s",
    ]
    if row["watermark"] is not None and row["watermark"].year > 1970:
        parts.append(f"watermark {row['watermark']:%Y-%m-%dT%H:%M:%S}Z")
    if row["offsets_behind_latest"] is not None:
        parts.append(f"lag {row['offsets_behind_latest']} offsets")
    if row["end_offset"] is not None:
        parts.append(f"offsets {row['end_offset']}")
    return " ".join(parts)


class ProgressRecorder(StreamingQueryListener):
    """Logs every micro-batch's progress and buffers it for ``_control/stream_progress``."""

    # Spark's listener interface names its methods in camelCase.

    def __init__(self, query_names: tuple[str, ...]) -> None:
        self.query_names = set(query_names)
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._terminated: set[str] = set()
        self._terminated_changed = threading.Condition(self._lock)
        self._next_flush = time.monotonic() + PROGRESS_FLUSH_SECONDS

    def onQueryStarted(self, event: Any) -> None:  # noqa: N802
        if event.name in self.query_names:
            log.info("%s started (id %s, run %s)", event.name, event.id, event.runId)

    def onQueryProgress(self, event: Any) -> None:  # noqa: N802
        progress = json.loads(event.progress.json)
        if progress.get("name") not in self.query_names:
            return
        row = progress_row(progress)
        log.info(progress_line(row))
        with self._lock:
            self._rows.append(row)
            del self._rows[:-MAX_BUFFERED_ROWS]

    def onQueryIdle(self, event: Any) -> None:  # noqa: N802
        pass

    def onQueryTerminated(self, event: Any) -> None:  # noqa: N802
        with self._terminated_changed:
            self._terminated.add(str(event.id))
            self._terminated_changed.notify_all()

    def wait_for_termination(self, query_ids: list[str], timeout: float) -> bool:
        """Wait until Spark has told this listener that these queries terminated.

        Spark delivers listener events asynchronously, in order: once a query's termination
        has arrived, so has every progress report it made.
        """
        wanted = {str(query_id) for query_id in query_ids}
        with self._terminated_changed:
            return self._terminated_changed.wait_for(
                lambda: wanted <= self._terminated, timeout=timeout
            )

    def flush_if_due(self, spark: SparkSession, path: str) -> int:
        """:meth:`flush` at most every PROGRESS_FLUSH_SECONDS; returns the rows written."""
        if time.monotonic() < self._next_flush:
            return 0
        self._next_flush = time.monotonic() + PROGRESS_FLUSH_SECONDS
        return self.flush(spark, path)

    def flush(self, spark: SparkSession, path: str) -> int:
        """Append the buffered rows to the progress table; returns how many were written."""
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return 0
        try:
            (
                spark.createDataFrame(rows, STREAM_PROGRESS_SCHEMA)
                .coalesce(1)
                .write.format("delta")
                .mode("append")
                .partitionBy(*STREAM_PROGRESS_PARTITION_COLUMNS)
                .save(path)
            )
        except Exception as error:  # observability must never stop ingestion
            log.warning("could not record stream progress (%s); will retry", error)
            with self._lock:
                self._rows = (rows + self._rows)[-MAX_BUFFERED_ROWS:]
            return 0
        return len(rows)
