"""The speed layer's checkpoint deleted while SPEED holds rows (docs/serving.md, "Faults").

What happens: the speed query starts again from the first version of RAW (a Delta streaming
source with no checkpoint reads the table's whole snapshot first), recomputes every window
from every archived record and MERGEs full aggregates into SPEED, which replace the rows there.
Nothing is lost or counted twice; RAW is not touched (the archiver keeps its own checkpoint).
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from weir.config import WeirConfig
from weir.lake import LakeLayout, local_path
from weir.layers.streaming import run_stream
from weir.layers.streaming.queries import speed_query_name
from weir.sample import mixed_sample

from .builders import (
    UTC,
    VIEW_COLUMNS,
    assert_raw_is_valid_plus_quarantine,
    event,
    expected_lines,
    lake_config,
    land,
    raw_lines,
    speed_view,
)


@pytest.mark.slow
def test_a_deleted_speed_checkpoint_rebuilds_speed_from_raw_without_loss_or_double_count(
    spark: SparkSession, weir_config: WeirConfig, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    files = {
        "a.jsonl": [payload for payload, _ in mixed_sample(30, seed=8, now=now)],
        "b.jsonl": [
            event("after-1", "vehicle-000", now - timedelta(minutes=1), 21.0),
            event("after-2", "vehicle-009", now - timedelta(minutes=2), 22.0),
        ],
    }
    config = lake_config(weir_config, tmp_path / "lake")
    lake = LakeLayout.from_config(config)
    land(config, "a.jsonl", files["a.jsonl"], now - timedelta(seconds=60))
    run_stream(spark, config, "files", available_now=True)
    assert speed_view(spark, lake).count() > 0

    shutil.rmtree(local_path(lake.checkpoint(speed_query_name("files"))))
    land(config, "b.jsonl", files["b.jsonl"], now - timedelta(seconds=30))
    run_stream(spark, config, "files", available_now=True)

    assert raw_lines(spark, lake) == expected_lines(files)  # every line archived once
    assert_raw_is_valid_plus_quarantine(spark, lake)
    clean = lake_config(weir_config, tmp_path / "clean")
    for name, age in (("a.jsonl", 60), ("b.jsonl", 30)):
        land(clean, name, files[name], now - timedelta(seconds=age))
    run_stream(spark, clean, "files", available_now=True)
    assert_df_equality(
        speed_view(spark, lake).select(*VIEW_COLUMNS),
        speed_view(spark, LakeLayout.from_config(clean)).select(*VIEW_COLUMNS),
        ignore_row_order=True,
        ignore_nullable=True,
    )
