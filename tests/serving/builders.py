"""Tiny BATCH, SPEED and unified tables (MINUTE_SCHEMA rows) for the serving layer's tests.

Rows are written with a fixed ``computed_at``, so expected tables compare exactly.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import yaml
from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from weir.config import WeirConfig
from weir.control import (
    MODE_FULL,
    RUN_SUCCEEDED,
    BatchRun,
    record_batch_run,
)
from weir.delta import table_version
from weir.lake import LakeLayout
from weir.schemas import (
    LAYER_SPEED,
    MINUTE_KEY,
    MINUTE_PARTITION_COLUMNS,
    MINUTE_SCHEMA,
)

UTC = timezone.utc


COMPUTED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
H1 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
D1, D2, D3 = date(2026, 2, 27), date(2026, 2, 28), date(2026, 3, 1)


MINUTE = timedelta(minutes=1)


JOB = Path(__file__).resolve().parents[2] / "jobs" / "merge" / "merge.py"


def at(text: str) -> datetime:
    """2026-03-01 at ``HH:MM`` UTC, or ``MM-DDTHH:MM`` in 2026."""
    if "T" not in text:
        text = f"03-01T{text}"
    return datetime.fromisoformat(f"2026-{text}:00+00:00")


def minute(
    device: str,
    start: str,
    count: int,
    layer: str,
    temp: Optional[float] = 20.0,
    computed_at: datetime = COMPUTED,
) -> tuple:
    """A MINUTE_SCHEMA row for the window starting at ``start`` (see :func:`at`)."""
    begin = at(start)
    return (
        device,
        begin,
        begin + MINUTE,
        begin.date(),
        count,
        temp,
        temp,
        temp,
        50.0,
        80.0,
        None,
        None,
        52.5,
        13.25,
        "ok",
        layer,
        computed_at,
    )


def frame(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    return spark.createDataFrame(rows, MINUTE_SCHEMA)


def write_view(spark: SparkSession, path: str, rows: list[tuple]) -> None:
    """Overwrite a whole BATCH or SPEED table (one commit)."""
    frame(spark, rows).write.format("delta").mode("overwrite").partitionBy(
        *MINUTE_PARTITION_COLUMNS
    ).save(path)


def replace_dates(spark: SparkSession, path: str, day: date, rows: list[tuple]) -> None:
    """Replace one event_date of BATCH, as a batch run does (replaceWhere)."""
    frame(spark, rows).write.format("delta").mode("overwrite").option(
        "replaceWhere", f"event_date = DATE'{day.isoformat()}'"
    ).partitionBy(*MINUTE_PARTITION_COLUMNS).save(path)


def upsert(spark: SparkSession, path: str, rows: list[tuple]) -> None:
    """MERGE rows into SPEED by window key, as the speed layer does each micro-batch."""
    condition = " AND ".join(f"t.{c} = s.{c}" for c in MINUTE_KEY)
    DeltaTable.forPath(spark, path).alias("t").merge(
        frame(spark, rows).alias("s"), condition
    ).whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()


def batch_run(
    spark: SparkSession,
    lake: LakeLayout,
    horizon: datetime,
    mode: str = MODE_FULL,
    view_version: Optional[int] = -1,
) -> None:
    """Record a successful batch run with horizon H (cutoff = H + 10 minutes) that committed
    BATCH's current version (as a run records the view it wrote), or ``view_version``."""
    finished = datetime.now(UTC)
    if view_version == -1:
        view_version = table_version(spark, lake.batch)
    record_batch_run(
        spark,
        lake,
        BatchRun(
            run_id=f"batch-{horizon:%H%M}-{mode}",
            status=RUN_SUCCEEDED,
            mode=mode,
            cutoff=horizon + timedelta(minutes=10),
            horizon=horizon,
            started_at=finished - timedelta(seconds=1),
            finished_at=finished,
            view_version=view_version,
        ),
    )


def unified(spark: SparkSession, lake: LakeLayout) -> DataFrame:
    return spark.read.format("delta").load(lake.serving)


def assert_unified(spark: SparkSession, lake: LakeLayout, rows: list[tuple]) -> None:
    assert_df_equality(
        unified(spark, lake), frame(spark, rows), ignore_row_order=True, ignore_nullable=True
    )


def versions(spark: SparkSession, path: str) -> list[int]:
    return [r["version"] for r in DeltaTable.forPath(spark, path).history().collect()]


def files_by_date(spark: SparkSession, lake: LakeLayout) -> dict[str, set[str]]:
    files: dict[str, set[str]] = {}
    for path in unified(spark, lake).inputFiles():
        folder = next(p for p in path.split("/") if p.startswith("event_date="))
        files.setdefault(folder.split("=", 1)[1], set()).add(path)
    return files


def config_for(base: WeirConfig, lake: LakeLayout) -> WeirConfig:
    """``base`` with the lake moved to ``lake``."""
    return base.model_copy(update={"lake": base.lake.model_copy(update={"root": lake.root})})


def write_conf(config: WeirConfig, folder: Path) -> str:
    path = folder / "weir.yaml"
    path.write_text(yaml.safe_dump(config.model_dump()), "utf-8")
    return str(path)


SPEED_ROWS = [
    minute("veh-1", "09:59", 1, LAYER_SPEED),  # window_end 10:00 <= H1: batch's
    minute("veh-1", "10:00", 4, LAYER_SPEED),  # window_end 10:01 = H1 + 1 min: speed's
    minute("veh-1", "10:01", 5, LAYER_SPEED),
    minute("veh-2", "09:50", 7, LAYER_SPEED),  # <= H1 and not in batch: not published
    minute("veh-2", "10:00", 6, LAYER_SPEED),  # speed's until batch covers it
]
