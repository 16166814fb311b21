"""The `batch` benchmark suite runs end to end on a tiny table and writes its figures.

No timing is asserted (figures depend on the machine and its load): only that every
measurement and check is there, and that the generated table has the mix it claims.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from weir.bench import batch
from weir.bench.suites import SUITES
from weir.config import WeirConfig
from weir.contract import classify_records

EVENTS = 20_000


@pytest.fixture(scope="module")
def figures(
    spark: SparkSession, weir_config: WeirConfig, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    folder = tmp_path_factory.mktemp("bench")
    result = batch.run(spark, EVENTS, repeat=1, config=weir_config, data_dir=folder / "data")
    path = result.write(folder / "results")
    assert path.name.startswith("batch-") and (folder / "results" / "batch-latest.json").exists()
    return json.loads(Path(path).read_text("utf-8"))


def test_registry_runs_the_suite_at_its_own_size_with_the_given_config(
    weir_config: WeirConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict] = []
    monkeypatch.setattr(batch, "run", lambda spark, **options: calls.append(options))
    SUITES[batch.SUITE](None, weir_config, None, 3)
    assert calls == [{"events": batch.DEFAULT_EVENTS, "repeat": 3, "config": weir_config}]


def test_results_file_has_every_measurement_and_check(figures: dict) -> None:
    names = [m["name"] for m in figures["measurements"]]
    assert names == [
        "parse_floor",
        "rebuild_full",
        "rebuild_history",
        "rebuild_incremental",
        "rebuild_unchanged",
        "rebuild_incremental_short_history",
        "contract_bound",
    ]
    assert all(m["seconds"] > 0 for m in figures["measurements"])
    assert len(figures["checks"]) == 4
    assert all(isinstance(check["met"], bool) for check in figures["checks"])
    assert figures["environment"]["events"] == EVENTS
    assert len(figures["environment"]["load_average_before"]) == 3
    assert figures["environment"]["contract_bound_ratio"] > 0


def test_generated_table_has_the_documented_mix(spark: SparkSession) -> None:
    raw = batch.generate_raw(spark, EVENTS).transform(classify_records)
    counts = raw.agg(
        F.count(F.lit(1)).alias("records"),
        F.countDistinct("event_id").alias("events"),
        F.count("quarantine_reason").alias("invalid"),
        F.min("ingest_date").alias("first_day"),
        F.max("ingest_date").alias("last_day"),
    ).first()
    assert counts["records"] == EVENTS
    assert counts["invalid"] == EVENTS // 100  # 1%: malformed + out of range
    # 2% retries; a malformed record's event_id is unknown (null), so not counted either
    assert counts["events"] == EVENTS - EVENTS // 50 - EVENTS // 200
    assert (counts["last_day"] - counts["first_day"]).days == batch.DAYS - 1


def test_the_short_history_lake_has_the_same_new_day_after_one_day_of_history(
    spark: SparkSession, tmp_path: Path
) -> None:
    lake = batch.prepared_lake(spark, EVENTS, tmp_path)
    short = batch.prepared_short_history_lake(spark, lake, EVENTS, tmp_path)
    long_raw = spark.read.format("delta").load(lake.raw)
    short_raw = spark.read.format("delta").load(short.raw)
    new_day = F.col("ingest_time") >= F.lit(batch.HISTORY_CUTOFF)

    assert long_raw.where(new_day).exceptAll(short_raw.where(new_day)).isEmpty()
    assert short_raw.where(new_day).exceptAll(long_raw.where(new_day)).isEmpty()
    history = short_raw.where(~new_day).agg(F.min("ingest_time").alias("first")).first()
    assert history["first"] >= batch.HISTORY_CUTOFF.replace(tzinfo=None) - timedelta(
        days=batch.SHORT_HISTORY_DAYS
    )
    assert (
        short_raw.where(~new_day).count()
        == long_raw.where(F.col("ingest_time") >= F.lit(batch.HISTORY_CUTOFF - timedelta(days=1)))
        .where(~new_day)
        .count()
    )
