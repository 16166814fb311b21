"""A small, seeded, mixed sample of telemetry payloads: valid events and every fault kind.

Used by the foundation demo to show the contract at work without any infrastructure. The
fleet simulator (`weir simulate`) is the realistic generator; this is the tiny fixed one.
"""

from __future__ import annotations

import itertools
import json
import random
from datetime import datetime, timedelta, timezone
from typing import Optional

from weir.contract.rules import METRIC_BOUNDS, Reason

# (payload, expected reason or None for valid)
LabelledPayload = tuple[str, Optional[str]]


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _valid_event(rng: random.Random, index: int, device: str, moment: datetime) -> dict:
    return {
        "event_id": f"evt-{index:06d}",
        "device_id": device,
        "event_time": _iso(moment),
        "temperature_c": round(rng.uniform(-10, 40), 2),
        "humidity_pct": round(rng.uniform(20, 90), 1),
        "battery_pct": round(rng.uniform(5, 100), 1),
        "speed_kmh": round(rng.uniform(0, 120), 1),
        "lat": round(37.5 + rng.uniform(-0.1, 0.1), 5),
        "lon": round(127.0 + rng.uniform(-0.1, 0.1), 5),
        "status": rng.choice(["driving", "parked", "charging"]),
    }


def mixed_sample(count: int, seed: int, now: datetime) -> list[LabelledPayload]:
    """``count`` valid events over the last hour plus one record of every fault kind."""
    rng = random.Random(seed)
    devices = [f"vehicle-{n:03d}" for n in range(max(1, count // 50))]
    events = [
        _valid_event(rng, i, rng.choice(devices), now - timedelta(seconds=rng.uniform(0, 3600)))
        for i in range(count)
    ]
    sample: list[LabelledPayload] = [(json.dumps(e), None) for e in events]
    base = events[0]
    fault_ids = itertools.count()

    def variant(**changes) -> str:
        record = {**base, "event_id": f"fault-{next(fault_ids)}", **changes}
        return json.dumps({k: v for k, v in record.items() if v is not ...})

    sample += [
        (json.dumps(base), None),  # a producer retry: duplicate, counted once
        (json.dumps({**base, "temperature_c": 99.9}), None),  # conflicting duplicate
        ('{"event_id": "truncated", "device_id": "vehicle-000", "event_t', Reason.MALFORMED_JSON),
        (variant(event_id=...), Reason.missing_field("event_id")),
        (variant(device_id=...), Reason.missing_field("device_id")),
        (variant(event_time=None), Reason.missing_field("event_time")),
        (variant(device_id="bad device!"), Reason.BAD_DEVICE_ID),
        (variant(temperature_c="21.5"), Reason.bad_type("temperature_c")),
        (variant(event_time="yesterday"), Reason.BAD_TIMESTAMP),
        (variant(event_time=_iso(now + timedelta(hours=2))), Reason.FUTURE_EVENT),
        (variant(speed_kmh=METRIC_BOUNDS["speed_kmh"][1] + 1), Reason.out_of_range("speed_kmh")),
        (variant(event_time=int((now - timedelta(minutes=3)).timestamp() * 1000)), None),
        (variant(firmware="2.1.0", battery_pct=None), None),  # extra field, null metric
    ]
    rng.shuffle(sample)
    return sample
