"""The raw archiver: every record exactly once in RAW, and its quarantine rows, per micro-batch.

``RawArchiver`` is the ``foreachBatch`` function of the ``raw-<source>`` query. For each
micro-batch it caches the RAW rows, then appends them to RAW and, side by side, classifies
them with the shared contract and appends the invalid ones to QUARANTINE. Each append is a
plain Delta append whose commit carries a mark (writer id, batch id); a batch at or below what
its writer had committed when the query started (``WriterIds.committed``, read once by the
checkpoint guard) is skipped. Only the batch a restart replays can be one: every later batch
id of a run is new. So when a batch is replayed after a crash, a write that already committed
is skipped, the other is done, and no append pays Delta's transaction check
(docs/streaming.md, "Exactly once").
Quarantine is derived from the very rows archived (same ``ingest_time``), so
``raw = valid + quarantine`` holds exactly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable

from pyspark.sql import DataFrame

from weir.contract import classify_records, quarantine_rows
from weir.crashpoints import RAW_COMMITTED, crash_point
from weir.delta import append_marked
from weir.lake import LakeLayout
from weir.schemas import QUARANTINE_PARTITION_COLUMNS, RAW_PARTITION_COLUMNS
from weir.spark import SCHEDULER_POOL_PROPERTY, scheduler_pool

log = logging.getLogger("weir.stream")


@dataclass(frozen=True)
class WriterIds:
    """The writer ids of one query's writes (they change with a reset epoch)."""

    raw: str
    quarantine: str
    # The latest batch each writer had committed when the query started.
    committed: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType({}), compare=False
    )


class RawArchiver:
    """``foreachBatch`` function of the raw archiver: append RAW and QUARANTINE exactly once."""

    def __init__(
        self,
        lake: LakeLayout,
        writer_ids: WriterIds,
        query_name: str,
        raw_rows: Callable[[DataFrame], DataFrame] = lambda batch: batch,
        before_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.lake = lake
        self.writer_ids = writer_ids
        self.query_name = query_name
        self.raw_rows = raw_rows  # a micro-batch of the source -> its RAW rows
        # Raises if this writer may no longer commit (its fence was taken over): checked per
        # micro-batch, since a heartbeat alone leaves up to a heartbeat's interval of commits.
        self.before_commit = before_commit

    def __call__(self, source_batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        # The count fills the cache (one read of the source); the two appends then read the
        # cache side by side: each is a write job and a commit mostly spent on the driver, so
        # they overlap rather than queue.
        source_batch.persist()
        batch = self.raw_rows(source_batch).persist()
        try:
            records = batch.count()
            self.before_commit()  # as late as possible: the appends below are the commits
            quarantine = batch.transform(classify_records).transform(quarantine_rows)
            # The appends' threads start with no local properties of their own: they take
            # the query's scheduler pool from this (the query's) thread.
            spark = batch.sparkSession
            scheduling = spark.sparkContext.getLocalProperty(SCHEDULER_POOL_PROPERTY)

            def in_pool(append: Callable[[DataFrame, int], None], rows: DataFrame) -> None:
                with scheduler_pool(spark, scheduling):
                    append(rows, batch_id)

            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="weir-archive") as pool:
                appends = [
                    pool.submit(in_pool, self.append_raw, batch),
                    pool.submit(in_pool, self.append_quarantine, quarantine),
                ]
                for append in appends:
                    append.result()
        finally:
            batch.unpersist()
            source_batch.unpersist()
        elapsed = time.monotonic() - started
        log.info(
            "%s batch %d: %d records archived in %.2fs", self.query_name, batch_id, records, elapsed
        )

    def append_raw(self, raw: DataFrame, batch_id: int) -> None:
        if self._is_new(self.writer_ids.raw, batch_id):
            append_marked(raw, self.lake.raw, RAW_PARTITION_COLUMNS, self.writer_ids.raw, batch_id)
        crash_point(RAW_COMMITTED)

    def append_quarantine(self, quarantine: DataFrame, batch_id: int) -> None:
        if self._is_new(self.writer_ids.quarantine, batch_id):
            append_marked(
                quarantine,
                self.lake.quarantine,
                QUARANTINE_PARTITION_COLUMNS,
                self.writer_ids.quarantine,
                batch_id,
            )

    def _is_new(self, writer: str, batch_id: int) -> bool:
        """Whether ``writer`` has not committed ``batch_id`` yet (a replayed batch may have)."""
        committed = self.writer_ids.committed.get(writer, -1)
        if batch_id <= committed:
            log.info(
                "%s batch %d: %s already committed up to batch %d, skipped",
                self.query_name,
                batch_id,
                writer,
                committed,
            )
            return False
        return True
