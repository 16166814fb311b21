"""`run_checks` end to end on a tiny Delta lake: results rows, Data Docs, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import local_config
from pyspark.sql import SparkSession

from quality import builders as b
from weir.config import WeirConfig
from weir.lake import LakeLayout, local_path
from weir.quality import run_checks
from weir.schemas import DQ_RESULTS_SCHEMA


@pytest.fixture(scope="module")
def good_lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> WeirConfig:
    root = tmp_path_factory.mktemp("dq-good") / "lake"
    config = local_config(root)
    lake = LakeLayout.from_config(config)
    b.write_lake(spark, lake, b.good_frames(spark, lake), [b.batch_run()])
    return config


def test_good_lake_passes_every_check(spark: SparkSession, good_lake: WeirConfig) -> None:
    report = run_checks(spark, good_lake, clock=lambda: b.NOW)
    failed = [o for o in report.outcomes if not o.success]
    assert failed == []
    assert report.run_id == b.batch_run().run_id
    assert report.agreement == 1.0
    lake = LakeLayout.from_config(good_lake)
    assert Path(local_path(report.docs_index)).is_file()
    rows = spark.read.format("delta").load(lake.dq_results)
    assert rows.schema == DQ_RESULTS_SCHEMA
    assert rows.count() == len(report.outcomes)
