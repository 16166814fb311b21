"""The checkpoint guard (weir.layers.streaming.checkpoints): checkpoints and Delta writes agree."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest
from pyspark.sql import SparkSession

from weir.config import ConfigError
from weir.delta import append_marked, append_once, committed_transactions, ensure_table
from weir.errors import WeirError
from weir.lake import LakeLayout, local_path
from weir.layers.streaming.checkpoints import (
    QueryWriters,
    epoch_of,
    guard_checkpoint,
)
from weir.schemas import (
    QUARANTINE_PARTITION_COLUMNS,
    QUARANTINE_SCHEMA,
    RAW_PARTITION_COLUMNS,
    RAW_SCHEMA,
)

from .builders import (
    raw_rows,
    table,
)


def test_committed_transactions_reads_the_delta_checkpoint_and_later_commits(
    spark: SparkSession, lake: LakeLayout
) -> None:
    # Created path-based (no metastore) with a Delta checkpoint every 2 commits.
    interval = "spark.databricks.delta.properties.defaults.checkpointInterval"
    spark.conf.set(interval, "2")
    try:
        ensure_table(spark, lake.raw, RAW_SCHEMA, RAW_PARTITION_COLUMNS)  # version 0
    finally:
        spark.conf.unset(interval)
    rows = raw_rows(spark, 1)
    for batch in range(2):  # versions 1, 2: checkpointed
        append_once(rows, lake.raw, RAW_PARTITION_COLUMNS, "raw-files-raw", batch)
    append_once(rows, lake.raw, RAW_PARTITION_COLUMNS, "other-writer", 7)  # version 3: JSON
    assert Path(local_path(lake.raw), "_delta_log", "_last_checkpoint").is_file()

    assert committed_transactions(spark, lake.raw) == {"raw-files-raw": 1, "other-writer": 7}
    # What the guard protects against: Delta skips a version it has seen.
    append_once(rows, lake.raw, RAW_PARTITION_COLUMNS, "raw-files-raw", 0)
    assert table(spark, lake.raw).count() == 3
    assert committed_transactions(spark, lake.quarantine) == {}


def test_guard_refuses_a_fresh_checkpoint_next_to_existing_writes(
    spark: SparkSession, lake: LakeLayout
) -> None:
    checkpoint = lake.checkpoint("raw-files")
    tables = (lake.raw, lake.quarantine)
    assert guard_checkpoint(spark, "raw-files", checkpoint, tables) == QueryWriters("raw-files", 0)
    ensure_table(spark, lake.raw, RAW_SCHEMA, RAW_PARTITION_COLUMNS)
    append_once(raw_rows(spark, 1), lake.raw, RAW_PARTITION_COLUMNS, "raw-files-raw", 4)
    append_once(raw_rows(spark, 1), lake.raw, RAW_PARTITION_COLUMNS, "raw-kafka-raw", 9)

    with pytest.raises(
        WeirError, match=r"missing or empty.*raw-files-raw up to batch 4"
    ) as refused:
        guard_checkpoint(spark, "raw-files", checkpoint, tables)
    assert "raw-kafka" not in str(refused.value)  # another query's writes are not its business
    writers = guard_checkpoint(spark, "raw-files", checkpoint, tables, reset_checkpoint=True)
    assert (writers.raw, writers.quarantine) == ("raw-files-raw-e1", "raw-files-quarantine-e1")
    # The epoch is recorded: a restart before the first batch needs no flag again.
    assert guard_checkpoint(spark, "raw-files", checkpoint, tables).epoch == 1


def test_guard_refuses_a_checkpoint_behind_its_output(
    spark: SparkSession, lake: LakeLayout
) -> None:
    checkpoint = lake.checkpoint("raw-files")
    offsets = Path(local_path(checkpoint), "offsets")
    offsets.mkdir(parents=True)
    (offsets / "0").write_text('v1\n{"batchWatermarkMs":0,"batchTimestampMs":0}\n{}\n')
    ensure_table(spark, lake.raw, RAW_SCHEMA, RAW_PARTITION_COLUMNS)
    append_once(raw_rows(spark, 1), lake.raw, RAW_PARTITION_COLUMNS, "raw-files-raw", 0)
    assert guard_checkpoint(spark, "raw-files", checkpoint, (lake.raw,)).epoch == 0

    append_once(raw_rows(spark, 1), lake.raw, RAW_PARTITION_COLUMNS, "raw-files-raw", 5)
    with pytest.raises(WeirError, match="behind its output"):
        guard_checkpoint(spark, "raw-files", checkpoint, (lake.raw,))
    with pytest.raises(ConfigError, match="needs no reset"):
        guard_checkpoint(spark, "raw-files", checkpoint, (lake.raw,), reset_checkpoint=True)


def test_marked_appends_count_as_committed_writes_and_the_guard_hands_them_over(
    spark: SparkSession, lake: LakeLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("weir.delta.MARK_PAGE", 2)  # the history is read in pages: 2, 20
    checkpoint = lake.checkpoint("raw-files")
    tables = (lake.raw, lake.quarantine)
    for name, batches in (("offsets", (0, 1)), ("commits", (0,))):  # batch 1 to be replayed
        folder = Path(local_path(checkpoint), name)
        folder.mkdir(parents=True)
        for batch in batches:
            (folder / str(batch)).write_text('v1\n{"batchWatermarkMs":0,"batchTimestampMs":0}\n')
    ensure_table(spark, lake.raw, RAW_SCHEMA, RAW_PARTITION_COLUMNS)
    interval = "spark.databricks.delta.properties.defaults.checkpointInterval"
    spark.conf.set(interval, "2")
    try:
        ensure_table(spark, lake.quarantine, QUARANTINE_SCHEMA, QUARANTINE_PARTITION_COLUMNS)
    finally:
        spark.conf.unset(interval)
    rows = raw_rows(spark, 1)
    append_marked(rows, lake.raw, RAW_PARTITION_COLUMNS, "raw-files-raw", 0)
    append_once(rows, lake.raw, RAW_PARTITION_COLUMNS, "raw-files-raw", 1)  # an older table's
    for batch in range(3):  # another writer's commits after ours: the first page misses ours
        append_marked(rows, lake.raw, RAW_PARTITION_COLUMNS, "raw-kafka-raw", batch)
    no_rows = spark.createDataFrame([], QUARANTINE_SCHEMA)
    quarantine = (lake.quarantine, QUARANTINE_PARTITION_COLUMNS)
    append_marked(no_rows, *quarantine, "raw-files-quarantine", 0)  # no rows: no commit

    assert committed_transactions(spark, lake.raw) == {"raw-files-raw": 1, "raw-kafka-raw": 2}
    assert committed_transactions(spark, lake.quarantine) == {}
    # QUARANTINE's log starts at its first commit: no mark means never written, not lost.
    writers = guard_checkpoint(spark, "raw-files", checkpoint, tables)
    assert dict(writers.committed) == {"raw-files-raw": 1}

    # Log clean-up took QUARANTINE's first commits (a Delta checkpoint at version 2 remains):
    # whether the replayed batch 1 reached it can no longer be told, so the guard refuses.
    for version in (1, 2):
        append_once(no_rows, *quarantine, "kinesis-other-quarantine", version)
    for version in (0, 1):
        Path(local_path(lake.quarantine), "_delta_log", f"{version:020d}.json").unlink()
    with pytest.raises(WeirError, match=r"no write of raw-files-quarantine.*left the log"):
        guard_checkpoint(spark, "raw-files", checkpoint, tables)


@pytest.mark.parametrize(
    ("app_id", "epoch"),
    [
        ("raw-files-raw", 0),
        ("raw-files-quarantine", 0),
        ("raw-files-raw-e12", 12),
        ("raw-files-quarantine-e3", 3),
        ("raw-files-rawx", None),
        ("raw-kafka-raw", None),
        ("raw-files-raw-e", None),
    ],
)
def test_epoch_of_an_app_id(app_id: str, epoch: Optional[int]) -> None:
    assert epoch_of("raw-files", app_id) == epoch
