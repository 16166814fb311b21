"""The Hudi job of `weir bench hudi` without Hudi itself: what it upserts (first received wins
by the precombine field) and how its session is kept apart from Weir's (no Delta)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from weir.bench.hudi_job import (
    RECEIVE_RANK,
    hudi_events,
    hudi_jars,
    hudi_session_settings,
    hudi_write_options,
)
from weir.config import WeirConfig
from weir.errors import WeirError

SENT = datetime(2026, 3, 1, 10, 0, 5, tzinfo=timezone.utc)


def kafka_rows(spark: SparkSession, records: list[tuple[str, int]]):
    """(payload, seconds after SENT) per record, as Spark's Kafka source gives them."""
    return spark.createDataFrame(
        [
            (value.encode(), SENT + timedelta(seconds=delay), 0, offset)
            for offset, (value, delay) in enumerate(records)
        ],
        "value binary, timestamp timestamp, partition int, offset long",
    )


def event(event_id: str, **fields: object) -> str:
    document = {
        "event_id": event_id,
        "device_id": "vehicle-1",
        "event_time": "2026-03-01T10:00:00Z",
        "temperature_c": 20.5,
    }
    document.update(fields)
    return json.dumps({k: v for k, v in document.items() if v is not None})


def test_the_first_received_copy_of_an_event_has_the_greatest_receive_rank(
    spark: SparkSession,
) -> None:
    rows = hudi_events(kafka_rows(spark, [(event("e1"), 0), (event("e1"), 30)])).collect()

    first, retry = sorted(rows, key=lambda r: r["received_at"])
    assert first[RECEIVE_RANK] > retry[RECEIVE_RANK]
    assert first["event_date"] == "2026-03-01"
    assert first["temperature_c"] == 20.5


def test_records_without_a_key_or_a_readable_event_time_are_not_upserted(
    spark: SparkSession,
) -> None:
    records = [
        (event("e1"), 0),
        (event(None), 0),
        (event(""), 0),
        (event("  ", device_id="vehicle-2"), 0),
        (event("e5", device_id=""), 0),
        (event("e3", event_time="yesterday"), 0),
        ('{"event_id": "e4"', 0),
    ]
    kept = [r["event_id"] for r in hudi_events(kafka_rows(spark, records)).collect()]

    assert kept == ["e1"]


def test_the_upsert_is_keyed_by_event_id_and_ordered_by_receive_rank() -> None:
    options = hudi_write_options("MERGE_ON_READ", "t")

    assert options["hoodie.datasource.write.recordkey.field"] == "event_id"
    assert options["hoodie.datasource.write.precombine.field"] == RECEIVE_RANK
    assert options["hoodie.record.merge.mode"] == "EVENT_TIME_ORDERING"
    assert options["hoodie.datasource.write.operation"] == "upsert"
    assert options["hoodie.datasource.write.table.type"] == "MERGE_ON_READ"
    with pytest.raises(ValueError, match="table type"):
        hudi_write_options("APPEND_ONLY", "t")


def test_the_hudi_session_has_hudi_extensions_and_no_delta(
    weir_config: WeirConfig, tmp_path: Path
) -> None:
    weir_jars = tmp_path / "spark"
    hudi = tmp_path / "hudi"
    weir_jars.mkdir()
    hudi.mkdir()
    for name in ("delta-spark_2.12-3.3.2.jar", "kafka-clients-3.4.1.jar", "hadoop-aws-3.3.4.jar"):
        (weir_jars / name).touch()
    (hudi / "hudi-spark3.5-bundle_2.12-1.0.2.jar").touch()

    settings = hudi_session_settings(weir_config, hudi_jars(str(weir_jars), hudi))

    assert settings["spark.sql.extensions"].endswith("HoodieSparkSessionExtension")
    assert "delta" not in settings["spark.jars"]
    assert "hudi-spark3.5-bundle" in settings["spark.jars"]
    assert "kafka-clients" in settings["spark.jars"]
    assert not [key for key in settings if key.startswith("spark.databricks.delta")]
    assert settings["spark.sql.catalogImplementation"] == "in-memory"  # Derby: one JVM
    assert not [key for key in settings if "javax.jdo" in key]


def test_without_the_bundle_the_error_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(WeirError, match="make bench-deps"):
        hudi_jars(str(tmp_path), tmp_path)
