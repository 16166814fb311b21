"""`weir dq run` end to end on a tiny Delta lake: results rows, Data Docs, exit codes, the gate."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from conftest import local_config
from pyspark.sql import SparkSession

from quality import builders as b
from weir.cli import main
from weir.config import WeirConfig, config_from_mapping
from weir.control import record_batch_run
from weir.delta import table_version
from weir.errors import EXIT_BAD_CONFIG, EXIT_CHECKS_FAILED, EXIT_OK
from weir.lake import LakeLayout, local_path
from weir.quality import gate_decision, run_checks
from weir.quality import run as run_module
from weir.schemas import DQ_RESULTS_SCHEMA

BAD_RUN = b.batch_run(
    run_id="batch-20260302T130500Z-bad00001",
    valid=28,  # one valid record short: raw != valid + quarantined
    finished_at=b.CUTOFF + timedelta(hours=1),
)


@pytest.fixture(scope="module")
def good_lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> WeirConfig:
    root = tmp_path_factory.mktemp("dq-good") / "lake"
    config = local_config(root)
    lake = LakeLayout.from_config(config)
    b.write_lake(spark, lake, b.good_frames(spark, lake), [b.batch_run()])
    return config


@pytest.fixture(scope="module")
def good_report(spark: SparkSession, good_lake: WeirConfig) -> run_module.CheckReport:
    return run_checks(spark, good_lake, clock=lambda: b.NOW)


@pytest.fixture(scope="module")
def bad_lake(
    spark: SparkSession, good_lake: WeirConfig, tmp_path_factory: pytest.TempPathFactory
) -> WeirConfig:
    """The good lake's tables, then a later batch run that does not reconcile."""
    root = tmp_path_factory.mktemp("dq-bad") / "lake"
    shutil.copytree(local_path(good_lake.lake.root), root)
    config = local_config(root)
    record_batch_run(spark, LakeLayout.from_config(config), BAD_RUN)
    return config


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's clock at b.NOW, so the unified table is as fresh as the fixtures say."""
    monkeypatch.setattr(run_module, "_utc_now", lambda: b.NOW)


def conf_file(folder: Path, config: WeirConfig, **dq: object) -> str:
    document = config.model_dump(by_alias=True)
    document["dq"] = {**document["dq"], **dq}
    path = folder / "weir.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return str(path)


def test_good_lake_passes_and_records_one_row_per_expectation(
    spark: SparkSession, good_lake: WeirConfig, good_report: run_module.CheckReport
) -> None:
    assert [o for o in good_report.outcomes if not o.success] == []
    assert good_report.run_id == b.batch_run().run_id
    assert good_report.agreement == 1.0
    rows = spark.read.format("delta").load(LakeLayout.from_config(good_lake).dq_results)
    # Delta reads every column back as nullable: compare names and types.
    assert [(f.name, f.dataType) for f in rows.schema] == [
        (f.name, f.dataType) for f in DQ_RESULTS_SCHEMA
    ]
    assert rows.where(f"run_id = '{good_report.run_id}'").count() == len(good_report.outcomes)
    assert Path(local_path(good_report.docs_index)).is_file()


def test_results_rows_carry_severity_observed_value_threshold_and_table_version(
    spark: SparkSession, good_lake: WeirConfig, good_report: run_module.CheckReport
) -> None:
    lake = LakeLayout.from_config(good_lake)
    rows = {
        row["expectation"]: row.asDict()
        for row in spark.read.format("delta")
        .load(lake.dq_results)
        .where("suite = 'batch_run'")
        .collect()
    }
    ratio = rows["expect_column_max_to_be_between(quarantine_ratio)"]
    assert ratio["table_name"] == "quarantine/telemetry"
    assert ratio["table_version"] == table_version(spark, lake.quarantine) == 0
    assert (ratio["severity"], ratio["success"]) == ("critical", True)
    assert (ratio["observed_value"], ratio["threshold"]) == (f"{1 / 30:.6g}", "<= 0.05")
    conflicting = rows["expect_column_max_to_be_between(conflicting_duplicate_ratio)"]
    assert (conflicting["severity"], conflicting["table_name"]) == ("warning", "batch/events")
    reconciliation = rows["expect_column_max_to_be_between(raw_minus_valid_and_quarantined)"]
    assert (reconciliation["observed_value"], reconciliation["table_name"]) == (
        "0",
        "raw/telemetry",
    )


def test_dq_run_exits_0_when_every_critical_check_passes(
    good_lake: WeirConfig, tmp_path: Path, fixed_clock: None, capsys: pytest.CaptureFixture
) -> None:
    code = main(["dq", "run", "--conf", conf_file(tmp_path, good_lake), "--suite", "batch_run"])
    assert code == EXIT_OK, capsys.readouterr().err
    assert "passed" in capsys.readouterr().out


def test_dq_run_exits_3_and_names_the_critical_check_that_failed(
    bad_lake: WeirConfig, tmp_path: Path, fixed_clock: None, capsys: pytest.CaptureFixture
) -> None:
    code = main(["dq", "run", "--conf", conf_file(tmp_path, bad_lake), "--suite", "batch_run"])
    assert code == EXIT_CHECKS_FAILED
    assert "raw_minus_valid_and_quarantined" in capsys.readouterr().err


def test_bad_dq_config_exits_2_naming_the_key_and_writes_nothing(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = local_config(tmp_path / "lake")
    document = config.model_dump(by_alias=True)
    document["dq"]["checks"]["ranges"]["mostly"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    assert main(["dq", "run", "--conf", str(path)]) == EXIT_BAD_CONFIG
    assert "dq.checks.ranges.mostly" in capsys.readouterr().err
    assert not (tmp_path / "lake").exists()


def test_gate_lets_a_batch_run_whose_critical_checks_passed_through(
    spark: SparkSession, good_lake: WeirConfig, good_report: run_module.CheckReport
) -> None:
    decision = gate_decision(spark, good_lake, b.batch_run().run_id)
    assert (decision.publish, decision.checked, decision.failed) == (True, True, ())


def test_gate_blocks_a_batch_run_whose_critical_check_failed(
    spark: SparkSession, bad_lake: WeirConfig
) -> None:
    run_checks(spark, bad_lake, suites=["batch_run"], clock=lambda: b.NOW)
    decision = gate_decision(spark, bad_lake, BAD_RUN.run_id)
    assert not decision.publish
    assert [o.expectation for o in decision.failed] == [
        "expect_column_max_to_be_between(raw_minus_valid_and_quarantined)"
    ]
    assert "not published" in decision.reason


def test_gate_in_warn_mode_publishes_the_failed_run_and_names_the_failure(
    spark: SparkSession, bad_lake: WeirConfig
) -> None:
    run_checks(spark, bad_lake, suites=["batch_run"], clock=lambda: b.NOW)
    warn = config_from_mapping(
        {**bad_lake.model_dump(), "dq": {**bad_lake.model_dump()["dq"], "gate": "warn"}},
        environ={},
    )
    decision = gate_decision(spark, warn, BAD_RUN.run_id)
    assert decision.publish and len(decision.failed) == 1
    assert "published anyway" in decision.reason


def test_gate_publishes_a_batch_run_not_checked_yet_and_says_so(
    spark: SparkSession, good_lake: WeirConfig
) -> None:
    # The gate refuses what a critical check failed for; a run nothing judged yet is published.
    unchecked = replace(BAD_RUN, run_id="batch-20260302T140500Z-never001").run_id
    decision = gate_decision(spark, good_lake, unchecked)
    assert decision.publish and not decision.checked
    assert "no data-quality results yet" in decision.reason
    off = config_from_mapping(
        {**good_lake.model_dump(), "dq": {**good_lake.model_dump()["dq"], "gate": "off"}},
        environ={},
    )
    assert gate_decision(spark, off, unchecked).publish
