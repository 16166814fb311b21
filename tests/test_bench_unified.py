"""The unified-freshness benchmark's arithmetic: when a record became visible in telemetry_minute.

``record_visibility`` ranks each window's events in produce order and finds the first committed
version of the unified table whose count for that window reached the rank; ``latency_summary``
turns (sent, visible) pairs into percentiles, counting records never visible as late as the end.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from weir.bench.unified import commit_instants, latency_summary, record_visibility

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
W1 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
W2 = datetime(2026, 3, 1, 10, 1, tzinfo=timezone.utc)
BASE = T0.timestamp()


def records(spark: SparkSession, rows: list[tuple]) -> object:
    """(device, window, event_id, produced second after T0) per valid first-received event."""
    return spark.createDataFrame(
        [(d, w, e, BASE + s) for d, w, e, s in rows],
        "device_id string, window_start timestamp, event_id string, sent_at double",
    )


def counts(spark: SparkSession, rows: list[tuple]) -> object:
    """(device, window, event_count, second after T0 the version was committed) per version."""
    return spark.createDataFrame(
        [(d, w, c, BASE + s) for d, w, c, s in rows],
        "device_id string, window_start timestamp, event_count long, visible_at double",
    )


def test_the_kth_event_of_a_window_is_visible_when_the_window_first_counts_k(
    spark: SparkSession,
) -> None:
    produced = records(
        spark,
        [
            ("veh-1", W1, "c", 5.0),  # produced third in its window
            ("veh-1", W1, "a", 1.0),
            ("veh-1", W1, "b", 2.0),
            ("veh-2", W1, "d", 3.0),
            ("veh-1", W2, "e", 61.0),
            ("veh-1", W2, "f", 62.0),  # never counted: the last version shows 1 in W2
        ],
    )
    versions = counts(
        spark,
        [
            # version at 10 s: veh-1 W1 counts 2
            ("veh-1", W1, 2, 10.0),
            # version at 70 s: veh-1 W1 counts 3, veh-2 W1 1, veh-1 W2 1
            ("veh-1", W1, 3, 70.0),
            ("veh-2", W1, 1, 70.0),
            ("veh-1", W2, 1, 70.0),
            # version at 130 s: nothing new (the same counts again)
            ("veh-1", W1, 3, 130.0),
            ("veh-2", W1, 1, 130.0),
            ("veh-1", W2, 1, 130.0),
        ],
    )

    visible = record_visibility(produced, versions).select("event_id", "rank", "latency_s")

    expected = spark.createDataFrame(
        [
            ("a", 1, 9.0),  # first in W1, counted by the version at 10 s
            ("b", 2, 8.0),
            ("c", 3, 65.0),  # third: W1 reached 3 at 70 s
            ("d", 1, 67.0),
            ("e", 1, 9.0),
            ("f", 2, None),  # W2 never reached 2: never visible, kept
        ],
        "event_id string, rank int, latency_s double",
    )
    assert_df_equality(visible, expected, ignore_row_order=True, ignore_nullable=True)


def test_produce_order_ties_are_broken_by_event_id(spark: SparkSession) -> None:
    produced = records(spark, [("veh-1", W1, "y", 1.0), ("veh-1", W1, "x", 1.0)])
    versions = counts(spark, [("veh-1", W1, 1, 4.0), ("veh-1", W1, 2, 9.0)])
    ranks = {
        r["event_id"]: (r["rank"], r["latency_s"])
        for r in record_visibility(produced, versions).collect()
    }
    assert ranks == {"x": (1, 3.0), "y": (2, 8.0)}


def test_summary_uses_nearest_rank_percentiles() -> None:
    rows = [(0.0, float(latency)) for latency in range(1, 101)]  # latencies 1..100 s
    summary = latency_summary(rows, ended_at=1000.0)
    assert summary == {
        "records": 100,
        "visible": 100,
        "never_visible": 0,
        "p50_s": 50.0,
        "p95_s": 95.0,
        "p99_s": 99.0,
        "max_s": 100.0,
        "lower_bound": False,
    }


def test_records_never_visible_count_as_late_as_the_end_and_are_reported() -> None:
    rows = [(10.0, 20.0)] * 97 + [(10.0, None)] * 3  # 3% never visible
    summary = latency_summary(rows, ended_at=310.0)
    assert summary["never_visible"] == 3 and summary["visible"] == 97
    assert summary["p50_s"] == 10.0 and summary["p95_s"] == 10.0
    assert summary["p99_s"] == 300.0  # the end of the run: a lower bound, not dropped
    assert summary["lower_bound"] is True


def test_summary_of_nothing() -> None:
    summary = latency_summary([], ended_at=1.0)
    assert summary["records"] == 0 and summary["p99_s"] is None


def test_commit_instants_are_the_log_files_modification_times(tmp_path: Path) -> None:
    log = tmp_path / "table" / "_delta_log"
    log.mkdir(parents=True)
    for version, mtime in ((0, 1_000.0), (1, 1_060.5)):
        path = log / f"{version:020d}.json"
        path.write_text("{}")
        os.utime(path, (mtime, mtime))
    (log / "00000000000000000001.checkpoint.parquet").write_text("")
    (log / "_last_checkpoint").write_text("{}")
    assert commit_instants(f"file://{tmp_path / 'table'}") == pytest.approx({0: 1000.0, 1: 1060.5})
