"""Small RAW tables, expected views and run helpers for the batch layer's tests.

Metric values are exact binary fractions, so sums and averages do not depend on the order
Spark adds them in and views from different runs compare exactly.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import yaml
from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from weir.config import WeirConfig
from weir.control import (
    MODE_INCREMENTAL,
    BatchRun,
)
from weir.lake import LakeLayout, local_path
from weir.layers.batch import (
    RebuildRequest,
    event_index_rows,
    first_received_events,
    rebuild_batch,
    received_before,
)
from weir.schemas import (
    BATCH_EVENTS_SCHEMA,
    MINUTE_SCHEMA,
    RAW_PARTITION_COLUMNS,
    RAW_SCHEMA,
)

UTC = timezone.utc


YEAR = 2026


JOB = Path(__file__).resolve().parents[3] / "jobs" / "batch" / "rebuild.py"


# The batch view without computed_at (the run's start time, the one column a re-run changes).
VIEW_SCHEMA = StructType([f for f in MINUTE_SCHEMA.fields if f.name != "computed_at"])


VIEW_COLUMNS = VIEW_SCHEMA.fieldNames()


def utc(text: str) -> datetime:
    """An aware UTC datetime from ISO text with Z, or from a short ``MM-DDTHH:MM:SS`` in 2026."""
    if not text.endswith("Z"):
        text = f"{YEAR}-{text}Z"
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- Builders -----------------------------------------------------------------------------------


def record(
    event_id: str,
    device_id: str,
    event_time: Any,
    ingest_time: str,
    offset: int,
    partition: str = "0",
    temp: Optional[float] = None,
    status: Optional[str] = None,
) -> tuple:
    """A RAW row (RAW_SCHEMA order) holding one event as its producer sent it.

    Times are short ``MM-DDTHH:MM:SS`` texts in 2026 UTC; an integer event_time is epoch ms.
    """
    fields = {"event_id": event_id, "device_id": device_id, "event_time": event_time}
    if isinstance(event_time, str):
        fields["event_time"] = utc(event_time).isoformat().replace("+00:00", "Z")
    if temp is not None:
        fields["temperature_c"] = temp
    if status is not None:
        fields["status"] = status
    return fault(json.dumps(fields), ingest_time, offset, partition)


def fault(payload: str, ingest_time: str, offset: int, partition: str = "0") -> tuple:
    received = utc(ingest_time)
    return (
        "kafka",
        "telemetry",
        partition,
        str(offset),
        None,
        payload,
        received,
        received,
        received.date(),
        None,  # payload_bytes
    )


def append_raw(spark: SparkSession, lake: LakeLayout, rows: list[tuple]) -> None:
    """One commit to RAW, as one micro-batch of the raw archiver would make."""
    spark.createDataFrame(rows, RAW_SCHEMA).write.format("delta").mode("append").partitionBy(
        *RAW_PARTITION_COLUMNS
    ).save(lake.raw)


def minute(
    device_id: str,
    window_start: str,
    count: int,
    temperatures: tuple[float, ...],
    status_last: Optional[str] = None,
) -> tuple:
    """An expected view row (VIEW_COLUMNS order) for events carrying only temperature/status."""
    start = utc(window_start)
    return (
        device_id,
        start,
        start + timedelta(minutes=1),
        start.date(),
        count,
        sum(temperatures) / len(temperatures),
        min(temperatures),
        max(temperatures),
        None,
        None,
        None,
        None,
        None,
        None,
        status_last,
        "batch",
    )


def expected_view(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    return spark.createDataFrame(rows, VIEW_SCHEMA)


def view(spark: SparkSession, lake: LakeLayout) -> DataFrame:
    return spark.read.format("delta").load(lake.batch).select(*VIEW_COLUMNS)


def assert_view(actual: DataFrame, expected: DataFrame) -> None:
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def partition_files(spark: SparkSession, lake: LakeLayout) -> dict[str, set[str]]:
    """The view's data files by event_date partition folder."""
    files: dict[str, set[str]] = {}
    for path in spark.read.format("delta").load(lake.batch).inputFiles():
        folder = next(p for p in path.split("/") if p.startswith("event_date="))
        files.setdefault(folder.split("=", 1)[1], set()).add(path)
    return files


def event_index(spark: SparkSession, lake: LakeLayout) -> DataFrame:
    return (
        spark.read.format("delta").load(lake.batch_events).select(*BATCH_EVENTS_SCHEMA.fieldNames())
    )


def index_of_a_full_dedup(spark: SparkSession, lake: LakeLayout, cutoff: str) -> DataFrame:
    """What batch/events must hold for a cutoff: a full dedup of every record before it."""
    raw = received_before(spark.read.format("delta").load(lake.raw), utc(cutoff))
    return event_index_rows(first_received_events(raw))


def index_commits(spark: SparkSession, lake: LakeLayout) -> dict[str, dict]:
    """The event index's commits by run id: their operation parameters."""
    history = DeltaTable.forPath(spark, lake.batch_events).history()
    return {
        row["userMetadata"]: dict(row["operationParameters"])
        for row in history.collect()
        if row["userMetadata"]
    }


def config_for(base: WeirConfig, lake: LakeLayout) -> WeirConfig:
    return base.model_copy(update={"lake": base.lake.model_copy(update={"root": lake.root})})


def rebuild(
    spark: SparkSession, config: WeirConfig, cutoff: str, mode: str = MODE_INCREMENTAL
) -> BatchRun:
    return rebuild_batch(spark, config, RebuildRequest(cutoff=utc(cutoff), mode=mode))


def write_conf(config: WeirConfig, folder: Path) -> str:
    path = folder / "weir.yaml"
    path.write_text(yaml.safe_dump(config.model_dump()), "utf-8")
    return str(path)


def lake_entries(lake: LakeLayout) -> set[str]:
    root = Path(local_path(lake.root))
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()
