"""A small lake for the notebooks, built once per test session from the simulator.

The simulator writes 40 minutes of a small fleet (heavy fault mix, so every quarantine reason,
conflicting duplicates and out-of-range readings show up) into the landing folder; the files
stream drains it in a few micro-batches (so the progress table has several rows per query);
one batch rebuild and one merge publish the unified table with both layers. Everything runs in
the test session's SparkSession; the notebooks' kernels each start their own, with the lake's
own metastore (``infra.state_dir``), which they fill as `weir catalog sync` would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from weir.config import FilesSourceConfig, LakeConfig, WeirConfig
from weir.lake import LakeLayout
from weir.layers.batch import RebuildRequest, rebuild_batch
from weir.layers.streaming import run_stream
from weir.serving import run_merge
from weir.simulate.faults import FaultMix
from weir.simulate.run import SimulateOptions, run_simulation

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = PROJECT_ROOT / "notebooks"
UTC = timezone.utc

DEVICES = 8
HISTORY_MINUTES = 40
INTERVAL_S = 15.0


def notebook_config(base: WeirConfig, folder: Path) -> WeirConfig:
    """``base`` with its lake and state (metastore, ledgers, Spark's log) under ``folder``;
    the files stream takes two landing files per micro-batch; kernels' drivers get 1 GiB."""
    return base.model_copy(
        update={
            "lake": LakeConfig(root=str(folder / "lake")),
            "sources": base.sources.model_copy(
                update={"files": FilesSourceConfig(max_files_per_trigger=2)}
            ),
            "spark": base.spark.model_copy(update={"driver_memory": "1g"}),
            "infra": base.infra.model_copy(update={"state_dir": str(folder / "state")}),
        }
    )


def write_conf(config: WeirConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.model_dump()), encoding="utf-8")
    return path


@dataclass(frozen=True)
class NotebookLake:
    """The built lake, its conf file, and facts the tests check the notebooks against."""

    conf: Path
    config: WeirConfig
    latest_date: date  # the last event_date of the unified table
    device: str  # a device with out-of-range readings, not the busiest (the default)

    @property
    def layout(self) -> LakeLayout:
        return LakeLayout.from_config(self.config)


@pytest.fixture(scope="session")
def notebook_lake(
    spark: SparkSession, weir_config: WeirConfig, tmp_path_factory: pytest.TempPathFactory
) -> NotebookLake:
    folder = tmp_path_factory.mktemp("notebook-lake")
    config = notebook_config(weir_config, folder)
    now = datetime.now(UTC).replace(microsecond=0)
    sent = run_simulation(
        config,
        SimulateOptions(
            devices=DEVICES,
            rate=0,
            count=int(DEVICES * HISTORY_MINUTES * 60 / INTERVAL_S),
            sink="files",
            seed=18,
            start=now - timedelta(minutes=HISTORY_MINUTES),
            interval_s=INTERVAL_S,
            faults=FaultMix.preset("heavy"),
            roll_seconds=300,
        ),
    )
    assert sent.status == "completed", sent
    run_stream(spark, config, "files", available_now=True)
    # The cutoff follows the stream, as in `weir demo`: BATCH up to H, SPEED beyond.
    rebuild_batch(spark, config, RebuildRequest(cutoff=datetime.now(UTC).replace(microsecond=0)))
    run_merge(spark, config)

    layout = LakeLayout.from_config(config)
    unified = spark.read.format("delta").load(layout.serving)
    latest_date = unified.agg(F.max("event_date")).first()[0]
    busiest = (
        unified.groupBy("device_id")
        .agg(F.sum("event_count").alias("events"))
        .orderBy(F.desc("events"), "device_id")
        .first()["device_id"]
    )
    out_of_range = (
        spark.read.format("delta")
        .load(layout.quarantine)
        .where(F.col("reason").startswith("out_of_range:") & (F.col("device_id") != busiest))
        .groupBy("device_id")
        .count()
        .orderBy(F.desc("count"), "device_id")
        .first()
    )
    assert out_of_range is not None, "the heavy fault mix left no out-of-range reading"
    return NotebookLake(
        write_conf(config, folder / "notebooks.yaml"),
        config,
        latest_date,
        out_of_range["device_id"],
    )
