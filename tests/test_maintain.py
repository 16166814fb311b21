"""`weir maintain` (docs/serving.md, "Maintenance"): OPTIMIZE and VACUUM every Weir table."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from weir.cli import main
from weir.config import ConfigError, WeirConfig
from weir.errors import EXIT_BAD_CONFIG, WeirError
from weir.lake import LakeLayout, local_path
from weir.maintain import (
    MIN_RETENTION_HOURS,
    STATUS_MAINTAINED,
    STATUS_MISSING,
    run_maintenance,
    weir_tables,
)
from weir.schemas import LAYER_SPEED, MINUTE_PARTITION_COLUMNS, MINUTE_SCHEMA

UTC = timezone.utc


def minute_row(device: str, start: datetime) -> tuple:
    return (device, start, start + timedelta(minutes=1), start.date(), 1, 20.0, 20.0, 20.0,
            50.0, 80.0, None, None, 52.5, 13.25, "ok", LAYER_SPEED, start)  # fmt: skip


def append_minutes(spark: SparkSession, path: str, rows: list[tuple]) -> None:
    spark.createDataFrame(rows, MINUTE_SCHEMA).coalesce(1).write.format("delta").mode(
        "append"
    ).partitionBy(*MINUTE_PARTITION_COLUMNS).save(path)


def parquet_files_on_disk(path: str) -> int:
    return len(list(Path(local_path(path)).rglob("*.parquet")))


@pytest.fixture(scope="module", autouse=True)
def _small_table_settings(spark: SparkSession) -> Iterator[None]:
    """Tiny tables: Delta snapshots in one task, VACUUM's file listing in two, not 50 and 10000."""
    settings = {
        "spark.databricks.delta.snapshotPartitions": "1",
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
    }
    before = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    yield
    for key, value in before.items():
        if value is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, value)


@pytest.fixture
def config(weir_config: WeirConfig, lake: LakeLayout) -> WeirConfig:
    return weir_config.model_copy(
        update={"lake": weir_config.lake.model_copy(update={"root": lake.root})}
    )


@pytest.fixture
def speed_in_small_files(spark: SparkSession, lake: LakeLayout) -> Iterator[DataFrame]:
    """SPEED after three micro-batches on one day: three small files. Yields its rows."""
    start = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    for device in ("veh-3", "veh-1", "veh-2"):
        append_minutes(spark, lake.speed, [minute_row(device, start)])
    yield spark.createDataFrame(
        [minute_row(d, start) for d in ("veh-1", "veh-2", "veh-3")], MINUTE_SCHEMA
    )


def test_compaction_reduces_the_file_count_and_keeps_every_row(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout, speed_in_small_files: DataFrame
) -> None:
    lines: list[str] = []
    outcomes = run_maintenance(spark, config, report=lines.append)

    by_path = {outcome.table.path: outcome for outcome in outcomes}
    speed = by_path[lake.speed]
    assert (speed.status, speed.files_before, speed.files_after) == (STATUS_MAINTAINED, 3, 1)
    assert speed.files_compacted == 3
    assert speed.versions_deleted == 0  # one version of each window: none superseded
    assert_df_equality(
        spark.read.format("delta").load(lake.speed),
        speed_in_small_files,
        ignore_row_order=True,
        ignore_nullable=True,
    )
    history = DeltaTable.forPath(spark, lake.speed).history(3).collect()
    operations = [row["operation"] for row in history]
    assert "OPTIMIZE" in operations
    (optimize,) = [row for row in history if row["operation"] == "OPTIMIZE"]
    assert optimize["operationParameters"]["zOrderBy"] == '["device_id"]'
    # One line per Weir table; every other table is missing from this lake and skipped.
    assert len(lines) == len(weir_tables(lake)) == len(outcomes)
    assert lines[[t.path for t in weir_tables(lake)].index(lake.speed)].startswith(
        "speed/telemetry_minute: 3 -> 1 files (3 compacted, z-ordered by device_id), vacuumed"
    )
    skipped = [o.table.path for o in outcomes if o.status == STATUS_MISSING]
    assert skipped == [t.path for t in weir_tables(lake) if t.path != lake.speed]
    assert "raw/telemetry: skipped (no Delta table at" in lines[0]


def test_vacuum_below_seven_days_is_refused_before_any_table_is_touched(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout, speed_in_small_files: DataFrame
) -> None:
    version = DeltaTable.forPath(spark, lake.speed).history(1).first()["version"]

    with pytest.raises(ConfigError, match=r"--retention-hours: 24 h is below the 168 h minimum"):
        run_maintenance(spark, config, retention_hours=24)

    assert DeltaTable.forPath(spark, lake.speed).history(1).first()["version"] == version
    assert MIN_RETENTION_HOURS == 168


def test_an_allowed_short_retention_is_still_held_to_the_tables_own_retention(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout, speed_in_small_files: DataFrame
) -> None:
    # Delta's retentionDurationCheck stays on: the table keeps its 7-day default.
    with pytest.raises(WeirError, match="VACUUM of speed/telemetry_minute refused by Delta"):
        run_maintenance(spark, config, retention_hours=0, allow_short_retention=True)

    # A table whose owner lowered its own retention is vacuumed down to it.
    spark.sql(
        f"ALTER TABLE delta.`{lake.speed}` "
        "SET TBLPROPERTIES ('delta.deletedFileRetentionDuration' = 'interval 0 hours')"
    )
    assert parquet_files_on_disk(lake.speed) == 4  # three micro-batches and their compaction
    run_maintenance(spark, config, retention_hours=0, allow_short_retention=True)
    assert parquet_files_on_disk(lake.speed) == 1
    assert spark.read.format("delta").load(lake.speed).count() == 3


def test_weir_maintain_with_short_retention_exits_2_naming_the_option(
    weir_config: WeirConfig, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    conf = tmp_path / "weir.yaml"
    conf.write_text(yaml.safe_dump(weir_config.model_dump()), "utf-8")

    code = main(["maintain", "--conf", str(conf), "--retention-hours", "1"])

    assert code == EXIT_BAD_CONFIG
    assert "--retention-hours: 1 h is below the 168 h minimum" in capsys.readouterr().err


def test_every_weir_table_of_the_lake_is_maintained() -> None:
    lake = LakeLayout(root="s3://bucket/weir")
    paths = {table.path for table in weir_tables(lake)}
    assert paths == {
        lake.raw,
        lake.quarantine,
        lake.speed,
        lake.batch,
        lake.batch_events,
        lake.serving,
        lake.batch_runs,
        lake.merge_runs,
        lake.stream_progress,
        lake.dq_results,
    }
    zordered = {table.path for table in weir_tables(lake) if table.zorder_by}
    assert zordered == {lake.speed, lake.batch, lake.serving}
