"""`weir demo` end to end on a tmp lake: the seeded sample through RAW, QUARANTINE and BATCH,
checked against what the sample itself defines, and read back by a second Delta implementation
(the `deltalake` package, as Athena or a notebook would) to show the tables are plain Delta."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from weir.config import WeirConfig, config_from_mapping
from weir.demo import SAMPLE_FILE, DemoSummary, run_demo
from weir.lake import LakeLayout, local_path
from weir.sample import mixed_sample

pytestmark = pytest.mark.slow

COUNT, SEED = 300, 1


class DemoRun(NamedTuple):
    summary: DemoSummary
    lake: LakeLayout
    sample: list[tuple[str, Any]]  # (payload, expected reason or None), in landed order


@pytest.fixture(scope="module")
def demo(
    spark: SparkSession, weir_config: WeirConfig, tmp_path_factory: pytest.TempPathFactory
) -> DemoRun:
    root = tmp_path_factory.mktemp("demo") / "lake"
    document = {**weir_config.model_dump(), "lake": {"root": f"file://{root}"}}
    config = config_from_mapping(document, environ={})
    lake = LakeLayout.from_config(config)
    summary = run_demo(spark, config, count=COUNT, seed=SEED)

    # The demo's clock is its ingest time; the same seed and clock give the same sample.
    (ingest,) = (
        spark.read.format("delta")
        .load(lake.raw)
        .select(F.col("ingest_time").cast("double"))
        .distinct()
        .collect()
    )
    now = datetime.fromtimestamp(ingest[0], timezone.utc)
    return DemoRun(summary, lake, mixed_sample(COUNT, SEED, now))


def landed_lines(lake: LakeLayout) -> list[str]:
    return (Path(local_path(lake.landing)) / SAMPLE_FILE).read_text("utf-8").splitlines()


def valid_events_first_received(sample: list[tuple[str, Any]]) -> dict[str, list[dict]]:
    """Every copy of each valid event, by event_id, in received (= landed line) order."""
    copies: dict[str, list[dict]] = {}
    for payload, reason in sample:
        if reason is None:
            event = json.loads(payload)
            copies.setdefault(event["event_id"], []).append(event)
    return copies


def minute_of(event_time: Any) -> datetime:
    if isinstance(event_time, int):
        moment = datetime.fromtimestamp(event_time / 1000, timezone.utc)
    else:
        moment = datetime.fromisoformat(event_time.replace("Z", "+00:00"))
    return moment.replace(second=0, microsecond=0).astimezone(timezone.utc)


def delta_rs(path: str) -> Any:
    return DeltaTable(local_path(path)).to_pyarrow_table()


def test_landed_file_is_the_seeded_sample(demo: DemoRun) -> None:
    assert landed_lines(demo.lake) == [payload for payload, _ in demo.sample]


def test_every_raw_record_is_valid_or_quarantined_once(demo: DemoRun) -> None:
    summary = demo.summary
    assert summary.raw == len(demo.sample)
    assert summary.raw == summary.valid + summary.quarantined
    assert summary.valid == sum(reason is None for _, reason in demo.sample)


def test_every_reason_in_the_sample_is_quarantined_once(demo: DemoRun) -> None:
    expected = Counter(reason for _, reason in demo.sample if reason is not None)
    assert set(expected.values()) == {1}
    assert demo.summary.quarantine_by_reason == dict(expected)


def test_distinct_events_and_conflicts_are_those_the_sample_defines(demo: DemoRun) -> None:
    copies = valid_events_first_received(demo.sample)
    conflicting = [
        event_id
        for event_id, events in copies.items()
        if len({json.dumps(e, sort_keys=True) for e in events}) > 1
    ]
    assert conflicting, "the sample carries a conflicting duplicate"
    assert demo.summary.distinct_events == len(copies)
    assert demo.summary.conflicting_duplicates == len(conflicting)


def test_batch_view_counts_each_distinct_event_in_its_minute(
    demo: DemoRun, spark: SparkSession
) -> None:
    expected = Counter(
        (events[0]["device_id"], minute_of(events[0]["event_time"]))
        for events in valid_events_first_received(demo.sample).values()
    )
    rows = (
        spark.read.format("delta")
        .load(demo.lake.batch)
        .select("device_id", F.unix_timestamp("window_start").alias("start"), "event_count")
        .collect()
    )
    actual = {
        (r["device_id"], datetime.fromtimestamp(r["start"], timezone.utc)): r["event_count"]
        for r in rows
    }
    assert actual == dict(expected)
    assert demo.summary.minute_rows == len(expected)


@pytest.mark.parametrize("zone", ["raw", "quarantine", "batch"])
def test_a_second_delta_reader_sees_the_same_rows(
    zone: str, demo: DemoRun, spark: SparkSession
) -> None:
    path = getattr(demo.lake, zone)
    assert delta_rs(path).num_rows == spark.read.format("delta").load(path).count()


def test_a_second_delta_reader_sees_the_same_values(demo: DemoRun) -> None:
    reasons = delta_rs(demo.lake.quarantine).column("reason").to_pylist()
    assert Counter(reasons) == Counter(demo.summary.quarantine_by_reason)
    batch = delta_rs(demo.lake.batch)
    assert pc.sum(batch.column("event_count")).as_py() == demo.summary.distinct_events
    assert set(batch.column("layer").to_pylist()) == {"batch"}
