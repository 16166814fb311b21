"""The fleet and the record stream: determinism, clean payloads, smooth physics, event times."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest

from simulate.conftest import START_US, spec
from weir.contract.rules import DEVICE_ID_PATTERN, METRIC_BOUNDS, REQUIRED_FIELDS
from weir.simulate.faults import serialize
from weir.simulate.fleet import (
    DRIVING,
    SENSOR_STATUSES,
    VEHICLE_STATUSES,
    Fleet,
    fleet_device_ids,
)
from weir.simulate.stream import Batch, RecordStream, stream_records

DAY_US = 86_400 * 1_000_000


def payloads(records) -> list[bytes]:
    return [r.payload for r in records]


def test_same_spec_gives_the_same_records_byte_for_byte() -> None:
    first = stream_records(spec(seed=3, mix="heavy"), 5000)
    second = stream_records(spec(seed=3, mix="heavy"), 5000)
    assert payloads(first) == payloads(second)
    assert [r._replace(payload=b"") for r in first] == [r._replace(payload=b"") for r in second]


def test_a_shorter_run_is_a_prefix_of_a_longer_one() -> None:
    assert (
        payloads(stream_records(spec(seed=3), 700))
        == payloads(stream_records(spec(seed=3), 2000))[:700]
    )


def test_another_seed_gives_other_records_and_other_event_ids() -> None:
    first = stream_records(spec(seed=3), 500)
    other = stream_records(spec(seed=4), 500)
    assert payloads(first) != payloads(other)
    assert not {r.event_id for r in first if r.event_id} & {r.event_id for r in other}


def test_device_ids_are_stable_and_match_the_contract_pattern() -> None:
    fleet = Fleet(devices=300, seed=9, start_us=START_US, interval_us=1_000_000)
    again = Fleet(devices=300, seed=9, start_us=START_US + 7, interval_us=2_000_000)
    assert fleet.device_ids == again.device_ids
    assert len(set(fleet.device_ids)) == 300
    assert all(re.fullmatch(DEVICE_ID_PATTERN, d) for d in fleet.device_ids)
    kinds = Counter(d.split("-")[0] for d in fleet.device_ids)
    assert set(kinds) == {"veh", "sen"} and kinds["veh"] > kinds["sen"]


def test_clean_payloads_are_valid_contract_events() -> None:
    records = stream_records(spec(seed=5, mix="none", devices=200), 4000)
    assert {r.fault for r in records} == {"none"} and {r.reason for r in records} == {None}
    for record in records:
        event = json.loads(record.payload)
        assert all(event[name] for name in REQUIRED_FIELDS)
        assert event["event_id"] == record.event_id and event["device_id"] == record.key
        for name, (low, high) in METRIC_BOUNDS.items():
            if name in event:
                assert low <= event[name] <= high, (name, event)
        statuses = VEHICLE_STATUSES if record.key.startswith("veh") else SENSOR_STATUSES
        assert event["status"] in statuses
        assert ("speed_kmh" in event) == record.key.startswith("veh")
        assert ("humidity_pct" in event) == record.key.startswith("sen")


def test_fast_template_and_editable_members_give_the_same_bytes() -> None:
    fleet = Fleet(devices=100, seed=2, start_us=START_US, interval_us=1_000_000)
    for _ in range(3):
        tick = fleet.step()
        for device, row in enumerate(tick.rows):
            full = ("evt-1", *row)
            assert serialize(fleet.fields(device, full)) == fleet.payload(device, full)


def test_event_times_come_from_start_and_interval_only() -> None:
    interval_us = 2_000_000
    fleet = Fleet(devices=64, seed=1, start_us=START_US, interval_us=interval_us)
    for number in range(5):
        tick = fleet.step()
        assert tick.time_us == START_US + number * interval_us
        assert all(tick.time_us <= t < tick.time_us + interval_us for t in tick.event_time_us)
        texts = [
            json.loads(fleet.payload(d, ("e", *row)))["event_time"]
            for d, row in enumerate(tick.rows)
        ]
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", t) for t in texts)


def test_vehicles_move_smoothly_and_no_faster_than_they_report() -> None:
    interval_s = 5.0
    fleet = Fleet(devices=200, seed=4, start_us=START_US, interval_us=int(interval_s * 1e6))
    vehicles = fleet.is_vehicle
    for _ in range(360):  # half an hour
        lat, lon, speed = fleet.lat.copy(), fleet.lon.copy(), fleet.speed.copy()
        driving = fleet.state == DRIVING
        fleet.step()
        kept_driving = vehicles & driving & (fleet.state == DRIVING)
        km = np.hypot(
            (fleet.lat - lat) * 111.32, (fleet.lon - lon) * 111.32 * np.cos(np.radians(fleet.lat))
        )
        assert np.all(km <= fleet.speed * interval_s / 3600 * 1.001 + 1e-9)
        assert np.all(np.abs(fleet.speed - speed)[kept_driving] <= 30)  # no jumps while driving
        assert np.all(km[~vehicles] == 0)  # sensors stay put
    assert np.all(np.abs(fleet.lat - fleet.home_lat) < 1.0)
    assert np.all(np.abs(fleet.lon - fleet.home_lon) < 1.5)


def test_batteries_drain_when_driving_and_charge_when_plugged_in() -> None:
    fleet = Fleet(devices=300, seed=6, start_us=START_US, interval_us=30_000_000)
    changes = {name: [] for name in VEHICLE_STATUSES}
    transitions = Counter()
    for _ in range(2 * 60 * 4):  # four hours at 30 s
        state, battery = fleet.state.copy(), fleet.battery.copy()
        fleet.step()
        for index in np.flatnonzero(fleet.is_vehicle):
            before, after = VEHICLE_STATUSES[state[index]], VEHICLE_STATUSES[fleet.state[index]]
            transitions[before, after] += 1
            if before == after:
                changes[before].append(fleet.battery[index] - battery[index])
    assert max(changes["driving"]) <= 0 and min(changes["charging"]) >= 0
    assert np.mean(changes["driving"]) < 0 < np.mean(changes["charging"])
    # Realistic status transitions only: no charging while driving, no jump charging -> driving.
    assert transitions["driving", "charging"] == 0 and transitions["charging", "driving"] == 0
    for edge in (("driving", "parked"), ("parked", "driving"), ("parked", "charging")):
        assert transitions[edge] > 0, edge


def test_temperature_drifts_smoothly_with_a_daily_cycle() -> None:
    fleet = Fleet(devices=50, seed=8, start_us=START_US, interval_us=60_000_000)
    temperatures = []
    for _ in range(60 * 24):  # one day at 1 minute
        tick = fleet.step()
        temperatures.append([float(row[2]) for row in tick.rows])
    series = np.array(temperatures)
    assert np.max(np.abs(np.diff(series, axis=0))) < 2.0  # never jumps
    daily_range = series.max(axis=0) - series.min(axis=0)
    assert np.all(daily_range > 6.0)  # the diurnal swing shows


def test_the_stream_interleaves_every_device_in_each_tick() -> None:
    stream = RecordStream(spec(devices=30, mix="none"))
    for number, (tick, records) in zip(range(3), stream.ticks()):
        assert tick.number == number
        assert [r.device for r in records] == list(range(30))
        assert [r.seq for r in records] == list(range(number * 30, number * 30 + 30))
        assert len({r.event_id for r in records}) == 30


def test_a_batch_slices_and_iterates_as_the_records_it_holds() -> None:
    import zlib

    _, batch = next(RecordStream(spec(seed=6, devices=40, mix="heavy")).ticks())
    records = list(batch)
    assert len(records) == len(batch) > 40  # every device, plus this tick's copies
    assert [r.seq for r in records] == list(batch.seqs)
    assert records == stream_records(spec(seed=6, devices=40, mix="heavy"), len(batch))
    assert list(batch[5:17]) == records[5:17] and batch[-1] == records[-1]
    assert list(batch[30:][2:4]) == records[32:34] and len(batch[60:40]) == 0
    assert list(Batch.of(records[3:9])) == records[3:9]
    assert batch.crc32s() == [zlib.crc32(r.payload) for r in records]
    assert batch[10:20].crc32s() == batch.crc32s()[10:20]
    assert list(Batch.joined([batch[:7], batch[7:20], batch[20:]])) == records
    with pytest.raises(ValueError, match="consecutive"):
        Batch.joined([batch[:7], batch[8:20]])


def test_the_device_ids_are_known_without_building_the_fleet() -> None:
    for devices, seed in ((1, 0), (300, 9), (123_456, 4)):
        fleet = Fleet(devices=devices, seed=seed, start_us=START_US, interval_us=1_000_000)
        assert fleet_device_ids(devices, seed) == fleet.device_ids
