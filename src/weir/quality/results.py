"""``dq/results``: one row per expectation per check run (DESIGN §9, ``DQ_RESULTS_SCHEMA``).

Rows are appended, never rewritten: the table is the history of every check. ``run_id`` is
the batch run whose data the checks judged (docs/quality.md), ``run_time`` when they ran.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from weir.delta import table_version
from weir.lake import LakeLayout
from weir.quality.outcomes import CheckOutcome
from weir.schemas import DQ_RESULTS_SCHEMA

_RANK = "_latest"


def result_rows(run_id: str, run_time: datetime, outcomes: Iterable[CheckOutcome]) -> list:
    """The outcomes as ``DQ_RESULTS_SCHEMA`` tuples (pure)."""
    return [
        (
            run_id,
            run_time,
            outcome.suite,
            outcome.table_name,
            outcome.table_version,
            outcome.expectation,
            outcome.severity,
            outcome.success,
            outcome.observed_value,
            outcome.threshold,
        )
        for outcome in outcomes
    ]


def append_results(
    spark: SparkSession,
    lake: LakeLayout,
    run_id: str,
    run_time: datetime,
    outcomes: Sequence[CheckOutcome],
) -> None:
    """Append a run's rows in one atomic Delta commit (the table is created on first use)."""
    rows = result_rows(run_id, run_time, outcomes)
    spark.createDataFrame(rows, DQ_RESULTS_SCHEMA).write.format("delta").mode("append").save(
        lake.dq_results
    )


def latest_results(
    spark: SparkSession, lake: LakeLayout, run_id: str, suites: Sequence[str]
) -> list[CheckOutcome]:
    """The latest result of each expectation (suite, table, expectation) recorded for
    ``run_id`` in ``suites``; [] when there is none (or no table yet)."""
    if table_version(spark, lake.dq_results) is None:
        return []
    rows = (
        spark.read.format("delta")
        .load(lake.dq_results)
        .where((F.col("run_id") == run_id) & F.col("suite").isin(list(suites)))
    )
    return [_outcome(row.asDict()) for row in _latest_per_expectation(rows).collect()]


def _latest_per_expectation(rows: DataFrame) -> DataFrame:
    newest_first = Window.partitionBy("suite", "table_name", "expectation").orderBy(
        F.col("run_time").desc()
    )
    return (
        rows.withColumn(_RANK, F.row_number().over(newest_first))
        .where(F.col(_RANK) == 1)
        .drop(_RANK, "run_id", "run_time")
        .orderBy("suite", "table_name", "expectation")
    )


def _outcome(row: dict) -> CheckOutcome:
    return CheckOutcome(
        suite=row["suite"],
        table_name=row["table_name"],
        table_version=row["table_version"],
        expectation=row["expectation"],
        severity=row["severity"],
        success=row["success"],
        observed_value=row["observed_value"],
        threshold=row["threshold"],
    )
