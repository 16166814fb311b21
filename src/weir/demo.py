"""`weir demo`: the flow end to end on the embedded local default, with a summary at the end.

This slice runs the contract path without infrastructure: a seeded mixed sample lands as a
JSON-lines file, becomes RAW records, is classified into QUARANTINE and valid events, which
are deduplicated and aggregated into the BATCH per-minute view. Later slices put the local
broker, the streaming layer, the merge and the catalog in front of and behind it.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.config import ConfigError, WeirConfig
from weir.contract import (
    aggregate_minutes,
    classify_records,
    dedup_first_received,
    quarantine_rows,
    valid_events,
)
from weir.contract.dedup import DISTINCT_CONTENTS, RECEIVED_COPIES
from weir.errors import WeirError
from weir.lake import LakeLayout, local_path
from weir.sample import mixed_sample
from weir.schemas import (
    LAYER_BATCH,
    MINUTE_PARTITION_COLUMNS,
    QUARANTINE_PARTITION_COLUMNS,
    RAW_PARTITION_COLUMNS,
    RAW_SCHEMA,
)

SAMPLE_FILE = "demo-sample.jsonl"


@dataclass(frozen=True)
class DemoSummary:
    raw: int
    valid: int
    quarantined: int
    distinct_events: int
    conflicting_duplicates: int
    minute_rows: int
    quarantine_by_reason: dict[str, int]
    seconds: float

    @property
    def invariant_holds(self) -> bool:
        return self.raw == self.valid + self.quarantined


DEMO_LAKE_MARKER = ".weir-demo-lake"


def _reset_local_lake(lake: LakeLayout) -> None:
    """Start from an empty lake, deleting only a lake an earlier demo created (it has the marker).

    Anything else at lake.root (a real lake, the project folder after a typo) is refused, never
    deleted.
    """
    if not lake.root.startswith("file://"):
        raise ConfigError("lake.root", "weir demo runs on a local file:// lake only")
    root = Path(local_path(lake.root))
    if root.exists() and any(root.iterdir()):
        if not (root / DEMO_LAKE_MARKER).is_file():
            raise ConfigError(
                "lake.root",
                f"{root} is not empty and was not created by weir demo; refusing to delete it "
                "(point lake.root at a new folder, or remove this one yourself)",
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / DEMO_LAKE_MARKER).write_text("created by weir demo; `weir demo` may delete this lake\n")


def land_sample(lake: LakeLayout, count: int, seed: int, now: datetime) -> Path:
    """Write the sample as one JSON-lines file in the landing folder (atomically)."""
    folder = Path(local_path(lake.landing))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / SAMPLE_FILE
    partial = folder / f".{SAMPLE_FILE}.partial"
    partial.write_text("\n".join(p for p, _ in mixed_sample(count, seed, now)) + "\n", "utf-8")
    partial.replace(target)
    return target


def raw_records_from_file(spark: SparkSession, path: Path, ingest_time: datetime) -> DataFrame:
    """RAW rows for a landed file: partition = file, offset = line number (1-based)."""
    lines = path.read_text("utf-8").splitlines()
    rows = [
        (
            "files",
            str(path.parent),
            path.name,
            str(number),
            None,
            line,
            None,
            ingest_time,
            ingest_time.date(),
        )
        for number, line in enumerate(lines, start=1)
    ]
    return spark.createDataFrame(rows, RAW_SCHEMA)


def run_demo(
    spark: SparkSession, config: WeirConfig, count: int = 2000, seed: int = 7
) -> DemoSummary:
    started = time.monotonic()
    lake = LakeLayout.from_config(config)
    _reset_local_lake(lake)
    now = datetime.now(timezone.utc).replace(microsecond=0)

    landed = land_sample(lake, count, seed, now)
    raw = raw_records_from_file(spark, landed, now)
    raw.write.format("delta").mode("append").partitionBy(*RAW_PARTITION_COLUMNS).save(lake.raw)

    classified = spark.read.format("delta").load(lake.raw).transform(classify_records).cache()
    try:
        quarantine = classified.transform(quarantine_rows)
        quarantine.write.format("delta").mode("append").partitionBy(
            *QUARANTINE_PARTITION_COLUMNS
        ).save(lake.quarantine)
        deduped = classified.transform(valid_events).transform(dedup_first_received).cache()
        minutes = aggregate_minutes(deduped, LAYER_BATCH, now)
        minutes.write.format("delta").mode("overwrite").partitionBy(*MINUTE_PARTITION_COLUMNS).save(
            lake.batch
        )
        dup_stats = deduped.agg(
            F.count(F.lit(1)).alias("distinct_events"),
            F.sum(RECEIVED_COPIES).alias("valid"),
            F.count(F.when(F.col(DISTINCT_CONTENTS) > 1, True)).alias("conflicting"),
        ).first()
        deduped.unpersist()
    finally:
        classified.unpersist()

    quarantine_table = spark.read.format("delta").load(lake.quarantine)
    by_reason = {
        r["reason"]: r["count"] for r in quarantine_table.groupBy("reason").count().collect()
    }
    summary = DemoSummary(
        raw=spark.read.format("delta").load(lake.raw).count(),
        valid=int(dup_stats["valid"] or 0),
        quarantined=quarantine_table.count(),
        distinct_events=int(dup_stats["distinct_events"]),
        conflicting_duplicates=int(dup_stats["conflicting"]),
        minute_rows=spark.read.format("delta").load(lake.batch).count(),
        quarantine_by_reason=dict(sorted(by_reason.items())),
        seconds=time.monotonic() - started,
    )
    if not summary.invariant_holds:
        raise WeirError(
            f"invariant broken: raw={summary.raw} != valid={summary.valid} + "
            f"quarantined={summary.quarantined}"
        )
    return summary
