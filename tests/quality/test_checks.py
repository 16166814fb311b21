"""Each check fails on crafted bad data and passes on good data.

Small explicit DataFrames (tests/quality/builders.py) stand in for the pinned tables; the
real metrics, suites and Great Expectations run on them (``plan_checks`` + ``validate``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import pytest
from conftest import local_config
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType

from quality import builders as b
from weir.config import WeirConfig, config_from_mapping
from weir.control import BatchRun
from weir.lake import LakeLayout
from weir.quality import suites as s
from weir.quality.outcomes import CheckOutcome
from weir.quality.run import plan_checks
from weir.quality.validate import validate
from weir.schemas import LAYER_BATCH, LAYER_SPEED, MINUTE_SCHEMA, QUARANTINE_SCHEMA, RAW_SCHEMA


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> WeirConfig:
    return local_config(tmp_path_factory.mktemp("dq-checks") / "lake")


def with_checks(config: WeirConfig, **checks: dict) -> WeirConfig:
    document = config.model_dump()
    for name, values in checks.items():
        document["dq"]["checks"][name] = {**document["dq"]["checks"][name], **values}
    return config_from_mapping(document, environ={})


def nullable(schema: StructType) -> StructType:
    return StructType([StructField(f.name, f.dataType, True) for f in schema.fields])


def run_suites(
    spark: SparkSession,
    config: WeirConfig,
    suites: Sequence[str],
    folder: Path,
    frames: Optional[dict[str, DataFrame]] = None,
    batch_run: Optional[BatchRun] = None,
) -> list[CheckOutcome]:
    lake = LakeLayout.from_config(config)
    tables = {**b.good_frames(spark, lake), **(frames or {})}
    run = b.batch_run() if batch_run is None else batch_run
    plan = plan_checks(spark, config, suites, b.NOW, run, b.snapshots(spark, lake, tables))
    return validate(plan.validations, run.run_id, b.NOW, plan.versions(), folder)


@dataclass(frozen=True)
class Case:
    """Bad data for one check: the suite it runs in and the expectation that must fail."""

    suite: str
    expectation: str
    severity: str
    frames: Callable[[SparkSession, LakeLayout], dict[str, DataFrame]] = lambda spark, lake: {}
    batch_run: Optional[BatchRun] = None
    checks: dict = field(default_factory=dict)


def _view_with(layer: str, change: Callable[[list], list]) -> Callable:
    path = {LAYER_BATCH: "batch", LAYER_SPEED: "speed"}[layer]

    def frames(spark: SparkSession, lake: LakeLayout) -> dict[str, DataFrame]:
        rows = change(b.view_rows(layer))
        return {getattr(lake, path): b.frame(spark, rows, nullable(MINUTE_SCHEMA))}

    return frames


def _set(row: tuple, **values: Any) -> tuple:
    names = MINUTE_SCHEMA.fieldNames()
    return tuple(values.get(name, value) for name, value in zip(names, row))


def _hourly_unified(spark: SparkSession, lake: LakeLayout) -> dict[str, DataFrame]:
    """30 hours of one window per device and minute, the last complete hour with 10x events."""
    start = b.NOW - timedelta(hours=30)
    start = start.replace(minute=0)
    rows = []
    for minute in range(30 * 60 + 4):
        at = start + timedelta(minutes=minute)
        last_complete_hour = b.NOW.replace(minute=0) - timedelta(hours=1)
        count = 30 if last_complete_hour <= at < b.NOW.replace(minute=0) else 3
        rows.append(b.minute_row("dev-1", at, LAYER_BATCH, event_count=count))
    return {lake.serving: b.frame(spark, rows)}


def _zones(valid: int, malformed: int, reason: Optional[str] = None) -> Callable:
    def frames(spark: SparkSession, lake: LakeLayout) -> dict[str, DataFrame]:
        quarantined = [
            b.quarantine_row(valid + n, reason or "malformed_json") for n in range(malformed)
        ]
        return {
            lake.raw: b.frame(spark, b.raw_rows(valid, malformed), RAW_SCHEMA),
            lake.quarantine: b.frame(spark, quarantined, nullable(QUARANTINE_SCHEMA)),
        }

    return frames


CASES = {
    "view_missing_a_column_fails_schema": Case(
        s.SPEED,
        "expect_table_columns_to_match_ordered_list",
        "critical",
        frames=lambda spark, lake: {
            lake.speed: b.frame(spark, b.view_rows(LAYER_SPEED)).drop("status_last")
        },
    ),
    "view_with_an_int_event_count_fails_its_type": Case(
        s.BATCH,
        "expect_column_values_to_be_of_type(event_count)",
        "critical",
        frames=lambda spark, lake: {
            lake.batch: b.frame(spark, b.view_rows(LAYER_BATCH)).withColumn(
                "event_count", F.col("event_count").cast("int")
            )
        },
    ),
    "raw_with_a_null_ingest_time_fails_not_null_keys": Case(
        s.RAW,
        "expect_column_max_to_be_between(null_ingest_time)",
        "critical",
        frames=lambda spark, lake: {
            lake.raw: b.frame(
                spark,
                [*b.raw_rows()[:-1], (*b.raw_rows()[-1][:7], None, b.RECEIVED.date(), None)],
                nullable(RAW_SCHEMA),
            )
        },
    ),
    "view_with_a_null_device_fails_not_null_keys": Case(
        s.BATCH,
        "expect_column_max_to_be_between(null_device_id)",
        "critical",
        frames=_view_with(LAYER_BATCH, lambda rows: [_set(rows[0], device_id=None), *rows[1:]]),
    ),
    "average_out_of_design_range_fails_ranges": Case(
        s.BATCH,
        "expect_column_min_to_be_between(in_range_temperature_c_avg)",
        "critical",
        frames=_view_with(
            LAYER_BATCH, lambda rows: [_set(rows[0], temperature_c_avg=150.5), *rows[1:]]
        ),
    ),
    # On BATCH: SPEED stores versions of each window and is checked as its readers see it,
    # one row per window (docs/streaming.md, "SPEED: update mode and appended window versions").
    "repeated_window_key_fails_unique_keys": Case(
        s.BATCH,
        "expect_column_max_to_be_between(duplicate_keys)",
        "critical",
        frames=_view_with(LAYER_BATCH, lambda rows: [*rows, rows[0]]),
    ),
    "unified_an_hour_old_fails_freshness": Case(
        s.UNIFIED,
        "expect_column_max_to_be_between(freshness_minutes)",
        "critical",
        frames=lambda spark, lake: {
            lake.serving: b.frame(
                spark,
                [_set(row, window_end=row[2] - timedelta(hours=1)) for row in b.unified_rows()],
            )
        },
    ),
    "hour_with_ten_times_the_median_fails_volume": Case(
        s.UNIFIED,
        "expect_column_values_to_be_between(events_to_trailing_median)",
        "warning",
        frames=_hourly_unified,
        checks={"volume": {"mostly": 1.0}},
    ),
    "one_in_six_records_quarantined_fails_quarantine_ratio": Case(
        s.BATCH_RUN,
        "expect_column_max_to_be_between(quarantine_ratio)",
        "critical",
        frames=_zones(valid=25, malformed=5),
        batch_run=b.batch_run(valid=25, quarantined=5),
    ),
    "reason_outside_the_contract_fails_unknown_reasons": Case(
        s.QUARANTINE,
        "expect_column_max_to_be_between(unknown_reasons)",
        "critical",
        frames=_zones(valid=29, malformed=1, reason="out_of_range:altitude"),
    ),
    "batch_run_missing_a_valid_record_fails_reconciliation": Case(
        s.BATCH_RUN,
        "expect_column_max_to_be_between(raw_minus_valid_and_quarantined)",
        "critical",
        batch_run=b.batch_run(valid=28),
    ),
    "conflicting_duplicates_over_threshold_fail_as_warning": Case(
        s.BATCH_RUN,
        "expect_column_max_to_be_between(conflicting_duplicate_ratio)",
        "warning",
        batch_run=b.batch_run(duplicates=2, conflicting_duplicates=1),
    ),
    "speed_counting_other_events_fails_agreement": Case(
        s.AGREEMENT,
        "expect_column_values_to_be_between(agreement)",
        "warning",
        frames=_view_with(
            LAYER_SPEED,
            lambda rows: [_set(row, event_count=2) for row in rows[:3]] + rows[3:],
        ),
    ),
}


def test_good_data_passes_every_check_of_every_suite(
    spark: SparkSession, config: WeirConfig, tmp_path: Path
) -> None:
    outcomes = run_suites(spark, config, s.SUITES, tmp_path)
    assert [o for o in outcomes if not o.success] == []
    assert {o.suite for o in outcomes} == set(s.SUITES)
    assert (tmp_path / "index.html").is_file()


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_data_fails_its_check_and_no_other(
    spark: SparkSession, config: WeirConfig, tmp_path: Path, case: Case
) -> None:
    lake = LakeLayout.from_config(config)
    checked = with_checks(config, **case.checks)
    outcomes = run_suites(
        spark, checked, [case.suite], tmp_path, case.frames(spark, lake), case.batch_run
    )
    failed = {o.expectation: o for o in outcomes if not o.success}
    assert case.expectation in failed, [o.expectation for o in outcomes]
    assert failed[case.expectation].severity == case.severity
    schema_breaks = {
        "expect_table_columns_to_match_ordered_list",
        "expect_column_values_to_be_of_type",
    }
    others = [name for name in failed if name != case.expectation]
    assert all(name.split("(")[0] in schema_breaks for name in others), others


def test_mostly_lets_a_share_of_out_of_range_values_pass(
    spark: SparkSession, config: WeirConfig, tmp_path: Path
) -> None:
    bad_first = CASES["average_out_of_design_range_fails_ranges"]
    lake = LakeLayout.from_config(config)
    tolerant = with_checks(config, ranges={"mostly": 0.9})
    outcomes = run_suites(spark, tolerant, [s.BATCH], tmp_path, bad_first.frames(spark, lake))
    in_range = next(o for o in outcomes if o.expectation.endswith("(in_range_temperature_c_avg)"))
    assert in_range.success
    assert in_range.observed_value == f"{1 - 1 / 36:.6g}"
    assert in_range.threshold == ">= 0.9 of values in [-60, 150]"


def test_a_plan_validates_twice_with_the_same_outcomes(
    spark: SparkSession, config: WeirConfig, tmp_path: Path
) -> None:
    lake = LakeLayout.from_config(config)
    run = b.batch_run()
    plan = plan_checks(
        spark,
        config,
        [s.BATCH_RUN],
        b.NOW,
        run,
        b.snapshots(spark, lake, b.good_frames(spark, lake)),
    )
    first = validate(plan.validations, run.run_id, b.NOW, plan.versions(), tmp_path / "1")
    again = validate(plan.validations, run.run_id, b.NOW, plan.versions(), tmp_path / "2")
    assert first == again and len(first) == 3
