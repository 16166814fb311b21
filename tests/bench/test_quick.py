"""`weir bench --quick`: the quick scenarios at toy size, their figures and the report with
its plots, end to end (no timing is asserted: the figures of a toy run say nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from weir.bench.report import PLOTS
from weir.bench.suites import run_quick
from weir.config import WeirConfig

# Within the CI budget (2 minutes): the scenarios without a broker. Hudi's bundle is resolved
# by `make bench-deps`, not by the test set-up; the streaming and hudi quick runs are
# `make bench-quick`'s.
WITHOUT_HUDI = ["plain-batch", "contract"]


@pytest.mark.slow
def test_the_quick_run_writes_every_scenario_and_renders_the_report(
    spark: SparkSession, weir_config: WeirConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # generated inputs go to ./bench/data
    results, page = tmp_path / "results", tmp_path / "docs" / "performance.md"

    report_path, page = run_quick(spark, weir_config, results, page, names=WITHOUT_HUDI)

    report = json.loads(report_path.read_text())
    assert sorted(report["suites"]) == sorted(WITHOUT_HUDI)
    assert all(document["environment"]["quick"] for document in report["suites"].values())
    assert len(report["targets"]) == report["targets_met"] + report["targets_missed"] > 0
    text = page.read_text()
    for name in WITHOUT_HUDI:
        assert f"Suite `{name}`" in text
    for name in PLOTS:
        assert (page.parent / "performance" / f"{name}.png").stat().st_size > 0
