"""The `dq` benchmark suite runs end to end on a tiny lake and writes its figures.

No timing is asserted (figures depend on the machine and its load): only that every
measurement and the target's check are there, and that the suites passed on the lake.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from weir.bench import dq
from weir.bench.suites import SUITES
from weir.config import WeirConfig

EVENTS = 4_000


def test_registry_runs_the_suite_at_its_own_size_with_the_given_config(
    weir_config: WeirConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict] = []
    monkeypatch.setattr(dq, "run", lambda spark, **options: calls.append(options))
    SUITES[dq.SUITE](None, weir_config, None, 2)
    assert calls == [{"events": dq.DEFAULT_EVENTS, "repeat": 2, "config": weir_config}]


@pytest.mark.slow
def test_results_file_has_every_measurement_and_the_target(
    spark: SparkSession, weir_config: WeirConfig, tmp_path: Path
) -> None:
    result = dq.run(spark, EVENTS, repeat=1, config=weir_config, data_dir=tmp_path / "data")
    figures = json.loads(Path(result.write(tmp_path / "results")).read_text("utf-8"))
    assert [m["name"] for m in figures["measurements"]] == [
        "aggregation_pass",
        "dq_run",
        "dq_validate",
    ]
    assert all(m["seconds"] > 0 and m["events"] == EVENTS for m in figures["measurements"])
    assert [check["check"] for check in figures["checks"]] == ["dq_run / aggregation_pass >= 0.667"]
    assert figures["environment"]["expectations"] > 100
    rows = spark.read.format("delta").load(f"file://{tmp_path}/data/dq-{EVENTS}/dq/results")
    assert rows.where("severity = 'critical' AND NOT success").count() == 0
