"""The speed layer judged by the independent oracle (tests/oracle.py), not by weir.contract.

A fault-mix run of the simulator lands JSON-lines files; the stream reads one file per
micro-batch. The oracle replays the speed layer's semantics batch by batch (docs/streaming.md,
"What the speed layer promises"): an event whose time is behind the watermark of the batches
before it is left to the batch layer, the first copy of an event_id wins across batches, and
the watermark is the greatest event time seen so far minus the allowed lateness. Then:

* SPEED holds exactly the oracle's speed windows;
* for every window the watermark has passed, SPEED equals the batch view (the oracle's
  first-received dedup over every record), except the windows a late event or a conflicting
  pair of copies in one micro-batch touched: what the speed layer does not promise.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import oracle
import pytest
from delta.exceptions import MetadataChangedException
from pyspark.sql import SparkSession

from weir import delta
from weir.config import WeirConfig
from weir.delta import ensure_table
from weir.lake import LakeLayout
from weir.layers.streaming import run_stream, speed
from weir.schemas import MINUTE_PARTITION_COLUMNS, MINUTE_SCHEMA
from weir.simulate.faults import FaultMix
from weir.simulate.run import SimulateOptions, run_simulation

from .builders import lake_config, speed_view, table

UTC = timezone.utc
VALUES = (
    "event_count",
    "temperature_c_avg",
    "temperature_c_min",
    "temperature_c_max",
    "humidity_pct_avg",
    "battery_pct_min",
    "speed_kmh_avg",
    "speed_kmh_max",
    "lat_last",
    "lon_last",
    "status_last",
)
Window = tuple[str, datetime]


def window_of(event: dict) -> Window:
    start = oracle.from_micros(oracle.to_micros(event["event_time"]) // 60_000_000 * 60_000_000)
    return event["device_id"], start


def speed_semantics(batches: list[list[dict]], lateness: timedelta) -> dict[str, Any]:
    """What the speed layer should publish, replayed micro-batch by micro-batch.

    ``batches``: RAW rows (payload, ingest_time and coordinates) in the order read.
    """
    watermark: Optional[datetime] = None  # after the previous batch: evicts state
    late_bound: Optional[datetime] = None  # the one before: what is late in this batch
    newest: Optional[datetime] = None
    seen: set[str] = set()
    accepted: list[dict] = []
    late: set[Window] = set()
    ambiguous: set[Window] = set()
    every_valid: list[dict] = []
    for rows in batches:
        valid = []
        for row in rows:
            event, _ = oracle.classify(row["payload"], row["ingest_time"])
            if event is not None:
                valid.append({**event, **{k: row[k] for k in oracle_coordinates()}})
        every_valid.extend(valid)
        copies: dict[str, list[dict]] = {}
        for event in valid:
            if late_bound is not None and event["event_time"] < late_bound:
                late.add(window_of(event))
            elif event["event_id"] not in seen:
                copies.setdefault(event["event_id"], []).append(event)
        for event_id, same in copies.items():
            contents = {tuple(str(e[name]) for name in oracle.CONTENT) for e in same}
            if len(contents) > 1:  # which copy wins inside one micro-batch is not promised
                ambiguous.update(window_of(e) for e in same)
            seen.add(event_id)
            accepted.append(same[0])
        for event in valid:
            newest = event["event_time"] if newest is None else max(newest, event["event_time"])
        late_bound = watermark
        if newest is not None:
            watermark = newest - lateness
    batch_view = oracle.aggregate_minutes(oracle.dedup_first_received(every_valid))
    return {
        "speed": {
            (r["device_id"], r["window_start"]): r for r in oracle.aggregate_minutes(accepted)
        },
        "batch": {(r["device_id"], r["window_start"]): r for r in batch_view},
        "late": late,
        "ambiguous": ambiguous,
        "watermark": watermark,
    }


def oracle_coordinates() -> tuple[str, ...]:
    return ("source", "source_partition", "source_offset", "ingest_time")


def same(expected: dict, actual: dict) -> bool:
    for name in VALUES:
        want, got = expected[name], actual[name]
        if isinstance(want, float) and isinstance(got, float):
            if not math.isclose(want, got, rel_tol=1e-9, abs_tol=1e-9):
                return False
        elif want != got:
            return False
    return True


@pytest.mark.slow
def test_speed_is_the_batch_view_for_closed_windows_on_a_fault_mix_run(
    spark: SparkSession, weir_config: WeirConfig, tmp_path: Path
) -> None:
    config = lake_config(weir_config, tmp_path / "lake")
    lake = LakeLayout.from_config(config)
    now = datetime.now(UTC).replace(microsecond=0)
    sent = run_simulation(
        config,
        SimulateOptions(
            devices=6,
            rate=0,
            count=2400,
            sink="files",
            seed=17,
            start=now - timedelta(minutes=40),
            interval_s=6,
            roll_seconds=300,  # a file (one micro-batch) per 5 minutes of the fleet's clock
            faults=FaultMix.preset("heavy"),
        ),
    )
    assert sent.status == "completed"

    run_stream(spark, config, "files", available_now=True)

    raw = table(spark, lake.raw)
    rows = [
        {**row.asDict(), "ingest_time": row["ingest_time"].astimezone(UTC)}
        for row in raw.select("payload", *oracle_coordinates()).collect()
    ]
    order = sorted({row["ingest_time"] for row in rows})
    assert len(order) >= 5, "several micro-batches, so lateness and cross-batch copies matter"
    batches = [
        sorted(
            (r for r in rows if r["ingest_time"] == at),
            key=lambda r: (r["source_partition"], int(r["source_offset"])),
        )
        for at in order
    ]
    expected = speed_semantics(batches, timedelta(minutes=config.timing.allowed_lateness_minutes))
    assert expected["late"], "the fault mix sent events later than the allowed lateness"

    speed = {
        (r["device_id"], r["window_start"].astimezone(UTC)): r.asDict()
        for r in speed_view(spark, lake).collect()
    }
    unsure = expected["ambiguous"]
    assert set(speed) - unsure == set(expected["speed"]) - unsure
    wrong = [w for w in set(speed) - unsure if not same(expected["speed"][w], speed[w])]
    assert wrong == []

    closed = {
        w
        for w in expected["batch"]
        if w[1] + timedelta(minutes=1) <= expected["watermark"]
        and w not in expected["late"]
        and w not in unsure
    }
    assert len(closed) > 100
    differ = [w for w in closed if w not in speed or not same(expected["batch"][w], speed[w])]
    assert differ == []


def test_a_speed_write_that_loses_to_a_concurrent_commit_is_retried(
    spark: SparkSession, lake: LakeLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A blind append loses only to a metadata change (an ALTER TABLE beside the running
    # stream, say): the stream must not stop.
    ensure_table(spark, lake.speed, MINUTE_SCHEMA, MINUTE_PARTITION_COLUMNS)
    window = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    minutes = spark.createDataFrame(
        [
            (
                "veh-1",
                window,
                window + timedelta(minutes=1),
                window.date(),
                3,
                *([None] * 10),
                "speed",
                window,
            )
        ],
        MINUTE_SCHEMA,
    )
    real, calls = speed.append_versions, []

    def conflicting_once(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise MetadataChangedException("The metadata was changed concurrently.", "(test)")
        real(*args)

    monkeypatch.setattr(speed, "append_versions", conflicting_once)
    monkeypatch.setattr(delta, "backoff_seconds", lambda attempt: 0.0)
    speed.SpeedAppender(lake.speed)(minutes, 0)

    assert len(calls) == 2
    assert [r.event_count for r in speed_view(spark, lake).collect()] == [3]
