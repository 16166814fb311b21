"""SPEED as stored (window versions) and as read (one row per window): weir.speed_table.

The speed layer appends, each micro-batch, a version of every window it changed, stamped with
the batch's timestamp in ``computed_at`` (docs/streaming.md, "SPEED: update mode and
appended window versions"). Readers keep each window's newest version; `weir maintain`
deletes the others.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession

from weir.delta import ensure_table, table_version
from weir.lake import LakeLayout
from weir.layers.streaming.speed import SpeedCompactor, append_versions
from weir.schemas import (
    LAYER_SPEED,
    MINUTE_PARTITION_COLUMNS,
    MINUTE_SCHEMA,
    SPEED_TABLE_PROPERTIES,
)
from weir.speed_table import compact_speed, newest_versions, read_speed

UTC = timezone.utc
TEN = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def version(device: str, minute: int, count: int, batch: int, temp: float = 20.0) -> tuple:
    """A SPEED row: window 10:<minute> of ``device`` as micro-batch ``batch`` computed it
    (its timestamp: ``batch`` seconds after 10:30)."""
    start = TEN + timedelta(minutes=minute)
    computed = TEN + timedelta(minutes=30, seconds=batch)
    return (device, start, start + timedelta(minutes=1), start.date(), count, temp, temp, temp,
            None, None, None, None, None, None, None, LAYER_SPEED, computed)  # fmt: skip


def rows(spark: SparkSession, versions: list[tuple]) -> DataFrame:
    return spark.createDataFrame(versions, MINUTE_SCHEMA)


def speed_table(spark: SparkSession, lake: LakeLayout) -> None:
    """SPEED created as `weir stream` creates it (deletion vectors on)."""
    ensure_table(spark, lake.speed, MINUTE_SCHEMA, MINUTE_PARTITION_COLUMNS, SPEED_TABLE_PROPERTIES)


def stored(spark: SparkSession, lake: LakeLayout) -> DataFrame:
    return spark.read.format("delta").load(lake.speed)


def test_a_reader_sees_the_newest_version_of_each_window(spark: SparkSession) -> None:
    versions = [
        version("veh-1", 0, 2, batch=1),
        version("veh-1", 0, 5, batch=3),  # the newest of veh-1 10:00
        version("veh-1", 0, 4, batch=2),
        version("veh-1", 1, 1, batch=2),  # one version only
        version("veh-2", 0, 7, batch=1),
    ]

    assert_df_equality(
        newest_versions(rows(spark, versions)),
        rows(spark, [versions[1], versions[3], versions[4]]),
        ignore_row_order=True,
        ignore_nullable=True,
    )


def test_two_versions_of_one_batch_collapse_to_the_same_one_for_every_reader(
    spark: SparkSession,
) -> None:
    # A micro-batch appended, then replayed after a crash before its checkpoint: same
    # timestamp, and the replay may have kept another copy of an event within the batch.
    first, replay = version("veh-1", 0, 3, batch=4, temp=21.0), version("veh-1", 0, 3, 4, 22.5)

    for order in ([first, replay], [replay, first]):
        assert_df_equality(
            newest_versions(rows(spark, order)),
            rows(spark, [replay]),
            ignore_nullable=True,
        )


def test_appended_versions_read_as_one_row_per_window_at_every_table_version(
    spark: SparkSession, lake: LakeLayout
) -> None:
    first = [version("veh-1", 0, 2, batch=1), version("veh-2", 0, 1, batch=1)]
    second = [version("veh-1", 0, 6, batch=2)]
    append_versions(rows(spark, first), lake.speed, "speed-test", 1)
    pinned = table_version(spark, lake.speed)
    append_versions(rows(spark, second), lake.speed, "speed-test", 2)

    assert_df_equality(
        read_speed(spark, lake.speed),
        rows(spark, [second[0], first[1]]),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    assert_df_equality(
        read_speed(spark, lake.speed, pinned),
        rows(spark, first),
        ignore_row_order=True,
        ignore_nullable=True,
    )


def test_compaction_deletes_superseded_versions_and_leaves_the_view_unchanged(
    spark: SparkSession, lake: LakeLayout
) -> None:
    speed_table(spark, lake)
    versions = [
        version("veh-1", 0, 2, batch=1),
        version("veh-1", 0, 4, batch=2),
        version("veh-1", 0, 5, batch=3),
        version("veh-2", 0, 7, batch=1),
        version("veh-3", 0, 1, batch=5),
        version("veh-3", 0, 1, batch=5, temp=30.0),  # one batch written twice: both stay
    ]
    # The version is computed_at, not the commit: one append holds them all.
    append_versions(rows(spark, versions), lake.speed, "speed-test", 1)
    view = read_speed(spark, lake.speed).collect()

    assert compact_speed(spark, lake.speed) == 2
    assert_df_equality(
        stored(spark, lake),
        rows(spark, [versions[2], versions[3], versions[4], versions[5]]),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    assert sorted(read_speed(spark, lake.speed).collect()) == sorted(view)


def test_compaction_of_a_missing_table_deletes_nothing(
    spark: SparkSession, lake: LakeLayout
) -> None:
    assert compact_speed(spark, lake.speed) == 0
    assert read_speed(spark, lake.speed).count() == 0
    assert read_speed(spark, lake.speed).schema.fieldNames() == MINUTE_SCHEMA.fieldNames()


def test_the_stream_compacts_the_versions_computed_since_its_last_compaction(
    spark: SparkSession, lake: LakeLayout
) -> None:
    speed_table(spark, lake)
    old = [version("veh-9", 0, 1, batch=-600), version("veh-9", 0, 2, batch=-599)]
    recent = [version("veh-1", 0, 2, batch=1), version("veh-1", 0, 5, batch=3)]
    append_versions(rows(spark, old + recent), lake.speed, "speed-test", 1)
    # Started at 10:30: it looks back SPEED_COMPACT_OVERLAP (5 minutes), not to veh-9's.
    compactor = SpeedCompactor(lake.speed, every=60.0, clock=lambda: TEN.timestamp() + 1800)

    compactor.poke(spark)
    compacted = table_version(spark, lake.speed)
    compactor.poke(spark)  # within the minute: no second compaction

    assert table_version(spark, lake.speed) == compacted
    assert_df_equality(
        stored(spark, lake),
        rows(spark, [*old, recent[1]]),
        ignore_row_order=True,
        ignore_nullable=True,
    )
