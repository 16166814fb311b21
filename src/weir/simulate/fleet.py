"""A deterministic fleet of connected vehicles and fixed sensors, advanced one tick at a time.

Every device reports once per tick (the report interval), at a fixed phase inside the tick.
Per-device state lives in numpy arrays and one tick updates the whole fleet at once, so a
reading costs a few vector operations plus one string format:

* vehicles (``veh-…``) drive smooth trajectories around a home city (a heading random walk,
  speed pulled towards a per-vehicle cruise speed), drain their battery while driving, park,
  charge when low, and report ``driving | parked | charging``;
* sensors (``sen-…``) stay put, report humidity as well, drain slowly, are serviced when
  flat, and report ``ok | low_battery``;
* temperature follows a diurnal cycle of the device's longitude plus a slow drift.

The same seed and tick times give the same readings, byte for byte: nothing reads a clock.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from weir.contract.rules import METRIC_BOUNDS

# (latitude, longitude, mean temperature °C): where the fleet lives.
CITIES: tuple[tuple[float, float, float], ...] = (
    (37.5665, 126.9780, 13.0),  # Seoul
    (52.5200, 13.4050, 10.0),  # Berlin
    (40.7128, -74.0060, 13.0),  # New York
    (48.8566, 2.3522, 12.0),  # Paris
    (-33.8688, 151.2093, 18.0),  # Sydney
    (35.6762, 139.6503, 16.0),  # Tokyo
    (19.4326, -99.1332, 17.0),  # Mexico City
    (-23.5505, -46.6333, 20.0),  # São Paulo
    (59.3293, 18.0686, 7.0),  # Stockholm
    (1.3521, 103.8198, 27.0),  # Singapore
)
VEHICLE_SHARE = 0.7
VEHICLE_STATUSES = ("driving", "parked", "charging")
SENSOR_STATUSES = ("ok", "low_battery")
DRIVING, PARKED, CHARGING = 0, 1, 2
SENSOR_OK, SENSOR_LOW = 0, 1

# Mean time in a state before moving on (seconds).
_MEAN_DRIVE_S = 1200.0
_MEAN_PARK_S = 900.0
_MEAN_PLUG_IN_S = 300.0
# Energy: battery percent per km driven, per second charging, per second idle.
_DRAIN_PER_KM = 0.18
_CHARGE_PER_S = 0.01
_IDLE_DRAIN_PER_S = 0.00002
_SENSOR_DRAIN_PER_S = 0.00001
_KM_PER_DEGREE = 111.32
_ROAM_DEGREES = 0.25  # vehicles turn home when further than this

# The payload layout, in the order its members are written: each member's %-format and the
# indexes of its values in a row (see Tick.columns). Clean payloads are these templates filled
# in; faults start from the same members (weir.simulate.faults.serialize), so both give the
# same bytes. Vehicles and sensors share one row shape: slot 5 is speed or humidity.
_TIME = '"%s.%sZ"'  # the second's text, then the millisecond's ("007")
_ROW = (
    "event_id",
    "second",
    "millis",
    "temperature_c",
    "battery_pct",
    "speed_or_humidity",
    "lat",
    "lon",
    "status",
)
VEHICLE_LAYOUT: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("event_id", '"%s"', (0,)),
    ("device_id", '"%s"', ()),
    ("event_time", _TIME, (1, 2)),
    ("schema_version", "1", ()),
    ("temperature_c", "%s", (3,)),
    ("battery_pct", "%s", (4,)),
    ("speed_kmh", "%s", (5,)),
    ("lat", "%s", (6,)),
    ("lon", "%s", (7,)),
    ("status", '"%s"', (8,)),
)
SENSOR_LAYOUT = tuple(
    ("humidity_pct", text, slots) if key == "speed_kmh" else (key, text, slots)
    for key, text, slots in VEHICLE_LAYOUT
)


def _template(layout: tuple[tuple[str, str, tuple[int, ...]], ...], device_id: str) -> str:
    """The payload as one %-format string over a row, the device id baked in."""
    members = []
    for key, text, _ in layout:
        if key == "device_id":
            text = text % device_id  # ids never contain %
        members.append(f'"{key}":{text}')
    return "{" + ",".join(members) + "}"


# Number texts come from tables (a lookup costs far less than formatting a float): metrics
# are kept to 2 (temperature) or 1 decimals within the fleet's physical ranges.
_TEMPERATURE_RANGE = (-50.0, 60.0)
_TENTHS_MAX = 180.0  # battery, speed and humidity all fit in [0, 180]
_HUNDREDTHS = np.array(
    [
        f"{k / 100:.2f}"
        for k in range(int(_TEMPERATURE_RANGE[0] * 100), int(_TEMPERATURE_RANGE[1] * 100) + 1)
    ],
    dtype=object,
)
_TENTHS = np.array([f"{k / 10:.1f}" for k in range(int(_TENTHS_MAX * 10) + 1)], dtype=object)


def _hundredths(values: np.ndarray) -> list:
    low, high = _TEMPERATURE_RANGE
    index = np.rint((np.clip(values, low, high) - low) * 100).astype(np.int64)
    return _HUNDREDTHS[index].tolist()


def _tenths(values: np.ndarray) -> list:
    index = np.rint(np.clip(values, 0.0, _TENTHS_MAX) * 10).astype(np.int64)
    return _TENTHS[index].tolist()


_MILLIS = np.array([f"{k:03d}" for k in range(1000)], dtype=object)
# Status texts by code: vehicles 0-2, sensors 3-4 (their own codes plus 3).
_STATUSES = np.array(VEHICLE_STATUSES + SENSOR_STATUSES, dtype=object)
_SENSOR_STATUS_BASE = len(VEHICLE_STATUSES)
# The variable members of a payload, in template order: event id, then the Tick.columns.
_SLOTS = 9
_SLOT = re.compile("%s")


# "%.6f" of a coordinate in micro-degrees, from tables: "[-]D." by sign and whole degrees,
# then two three-digit groups (an array addition each, no float formatting).
_WHOLE_DEGREES = 181
_DEGREE_HEADS = np.array(
    [f"{d}." for d in range(_WHOLE_DEGREES)] + [f"-{d}." for d in range(_WHOLE_DEGREES)],
    dtype=object,
)


def _coordinate_texts(micro: np.ndarray) -> np.ndarray:
    """``"%.6f" % (m / 1e6)`` for each micro-degree value ``m`` (|m| < 181e6)."""
    size = np.abs(micro)
    whole, fraction = np.divmod(size, 1_000_000)
    head = whole + np.where(micro < 0, _WHOLE_DEGREES, 0)
    high, low = np.divmod(fraction, 1000)
    return _DEGREE_HEADS[head] + _MILLIS[high] + _MILLIS[low]


class _CoordinateTexts:
    """%.6f texts of a coordinate array, re-made only where the value moved.

    Parked vehicles and sensors keep their position, so most ticks make a fraction of them.
    """

    def __init__(self, values: np.ndarray) -> None:
        self.micro = np.rint(values * 1e6).astype(np.int64)
        self.texts = _coordinate_texts(self.micro)

    def update(self, values: np.ndarray) -> list:
        micro = np.rint(values * 1e6).astype(np.int64)
        moved = np.flatnonzero(micro != self.micro)
        if len(moved):
            self.texts[moved] = _coordinate_texts(micro[moved])
            self.micro = micro
        return self.texts.tolist()


def second_prefix(second: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of an epoch second (UTC)."""
    return datetime.fromtimestamp(second, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


@dataclass
class Tick:
    """One tick: the fleet's clock and every device's reading, ready to format."""

    number: int
    time_us: int  # the tick's start: the fleet's clock
    event_time_us: list  # per device
    columns: tuple  # _ROW order minus the event id: one list per member, one text per device

    def row(self, device: int) -> tuple:
        """One device's reading: a tuple in _ROW order, minus the event id."""
        return tuple(column[device] for column in self.columns)

    @property
    def rows(self) -> list:
        """Every device's :meth:`row` (tests; the hot path works on columns)."""
        return list(zip(*self.columns))


def _vehicle_flags(setup: np.random.Generator, devices: int) -> np.ndarray:
    return setup.random(devices) < VEHICLE_SHARE  # the setup generator's first draw


def _device_ids(is_vehicle: np.ndarray) -> list[str]:
    width = max(5, len(str(len(is_vehicle) - 1)))
    return [
        f"{'veh' if vehicle else 'sen'}-{index:0{width}d}"
        for index, vehicle in enumerate(is_vehicle.tolist())
    ]


def fleet_device_ids(devices: int, seed: int) -> list[str]:
    """The device ids of ``Fleet(devices, seed, ...)``, without building the fleet."""
    return _device_ids(_vehicle_flags(np.random.default_rng([seed, 1]), devices))


class Fleet:
    """``devices`` devices reporting every ``interval_us`` from ``start_us``; see the module doc."""

    def __init__(self, devices: int, seed: int, start_us: int, interval_us: int) -> None:
        if devices < 1:
            raise ValueError("a fleet has at least one device")
        if interval_us < 1:
            raise ValueError("the report interval must be positive")
        self.size = n = devices
        self.start_us = start_us
        self.interval_us = interval_us
        setup = np.random.default_rng([seed, 1])
        self._rng = np.random.default_rng([seed, 2])

        self.is_vehicle = _vehicle_flags(setup, n)
        self.device_ids: list[str] = _device_ids(self.is_vehicle)
        self.vehicle_flags: list[bool] = self.is_vehicle.tolist()
        self._quoted_ids = [f'"{device_id}"' for device_id in self.device_ids]
        self.templates: list[str] = [
            _template(VEHICLE_LAYOUT if vehicle else SENSOR_LAYOUT, device_id)
            for vehicle, device_id in zip(self.vehicle_flags, self.device_ids)
        ]
        # The same with the event_time member's whole JSON text as one slot (time faults).
        self.retime_templates: list[str] = [
            template.replace(_TIME, "%s", 1) for template in self.templates
        ]

        cities = np.array(CITIES)
        city = setup.integers(len(CITIES), size=n)
        self.home_lat = cities[city, 0] + setup.normal(0, 0.05, n)
        self.home_lon = cities[city, 1] + setup.normal(0, 0.05, n)
        self.climate = cities[city, 2] + setup.normal(0, 1.5, n)
        self.lat = self.home_lat + setup.normal(0, 0.05, n)
        self.lon = self.home_lon + setup.normal(0, 0.05, n)
        self.heading = setup.uniform(0, 2 * math.pi, n)
        self.cruise = setup.uniform(30, 110, n)
        self.speed = np.zeros(n)  # set once the initial states are drawn
        self.battery = setup.uniform(35, 100, n)
        self.charge_target = setup.uniform(85, 98, n)
        self.drift = setup.normal(0, 1.0, n)
        self.humidity_base = setup.uniform(35, 80, n)
        self.humidity_noise = np.zeros(n)
        self.state = np.where(
            self.is_vehicle,
            setup.choice([DRIVING, PARKED, CHARGING], size=n, p=[0.5, 0.4, 0.1]),
            SENSOR_OK,
        )
        self.speed = np.where(self.state == DRIVING, self.cruise, 0.0) * self.is_vehicle
        self.phase_us = setup.integers(0, interval_us, n)
        self.ticks = 0
        self._seconds: dict[int, str] = {}
        self._lat_texts = _CoordinateTexts(self.lat)
        self._lon_texts = _CoordinateTexts(self.lon)
        self._status_base = np.where(self.is_vehicle, 0, _SENSOR_STATUS_BASE)
        self._status_cap = np.where(self.is_vehicle, 2, 1)
        # Every payload of a tick is one str.join over the templates' constant pieces and the
        # tick's texts, interleaved: the constant pieces sit in place, the texts are assigned
        # by stride (a C-level copy each), and the joined text is split into payloads.
        pieces = [_SLOT.split(template) for template in self.templates]
        self._pieces: list = [None] * (2 * _SLOTS + 1) * n
        stride = 2 * _SLOTS + 1
        for slot, constant in enumerate(zip(*pieces)):
            texts = list(constant) if slot < _SLOTS else [text + "\n" for text in constant]
            self._pieces[2 * slot :: stride] = texts

    # --- dynamics -------------------------------------------------------------------------------
    def _advance(self, dt: float) -> None:
        rng, n = self._rng, self.size
        vehicle = self.is_vehicle
        u = rng.random(n)
        driving = vehicle & (self.state == DRIVING)
        parked = vehicle & (self.state == PARKED)
        charging = vehicle & (self.state == CHARGING)
        stop = driving & ((u < -math.expm1(-dt / _MEAN_DRIVE_S)) | (self.battery < 8))
        plug_in = parked & (self.battery < 35) & (u < -math.expm1(-dt / _MEAN_PLUG_IN_S))
        leave = parked & ~plug_in & (self.battery >= 20) & (u < -math.expm1(-dt / _MEAN_PARK_S))
        unplug = charging & (self.battery >= self.charge_target)
        state = self.state
        state[stop | unplug] = PARKED
        state[plug_in] = CHARGING
        state[leave] = DRIVING
        driving = vehicle & (state == DRIVING)

        # Speed: pulled towards the cruise speed while driving, zero otherwise.
        pull = -math.expm1(-dt / 40.0)
        noise = rng.standard_normal(n) * 2.0 * math.sqrt(min(dt, 40.0))
        speed = self.speed + (self.cruise - self.speed) * pull + noise
        self.speed = np.where(driving, np.clip(speed, 0.0, 180.0), 0.0)

        # Heading: a random walk, turned towards home when roaming too far.
        self.heading += rng.standard_normal(n) * 0.03 * math.sqrt(dt)
        away_lat, away_lon = self.home_lat - self.lat, self.home_lon - self.lon
        roaming = np.hypot(away_lat, away_lon) > _ROAM_DEGREES
        self.heading = np.where(roaming, np.arctan2(away_lon, away_lat), self.heading)
        km = self.speed * dt / 3600.0
        self.lat = self.lat + km * np.cos(self.heading) / _KM_PER_DEGREE
        self.lon = self.lon + km * np.sin(self.heading) / (
            _KM_PER_DEGREE * np.cos(np.radians(self.lat))
        )

        # Battery: drain per km driven, charge when plugged in; sensors are serviced when flat.
        drain = np.where(
            vehicle, km * _DRAIN_PER_KM + dt * _IDLE_DRAIN_PER_S, dt * _SENSOR_DRAIN_PER_S
        )
        gain = np.where(vehicle & (state == CHARGING), dt * _CHARGE_PER_S, 0.0)
        battery = self.battery - drain + gain
        battery = np.where(~vehicle & (battery <= 5.0), 100.0, battery)
        self.battery = np.clip(battery, 0.0, 100.0)
        self.state = np.where(vehicle, state, np.where(self.battery < 15, SENSOR_LOW, SENSOR_OK))

        # Temperature: slow mean-reverting drift; humidity moves against temperature.
        revert = -math.expm1(-dt / 3600.0)
        self.drift += -self.drift * revert + rng.standard_normal(n) * 0.03 * math.sqrt(dt)
        self.humidity_noise += -self.humidity_noise * revert + rng.standard_normal(
            n
        ) * 0.05 * math.sqrt(dt)

    def _temperature(self, time_us: int) -> np.ndarray:
        # Local solar time from longitude: warmest mid-afternoon.
        day_fraction = (time_us / 86_400e6 + self.lon / 360.0) % 1.0
        diurnal = 6.0 * np.sin(2 * math.pi * (day_fraction - 0.375))
        low, high = METRIC_BOUNDS["temperature_c"]
        return np.clip(self.climate + diurnal + self.drift, max(low, -50.0), min(high, 60.0))

    # --- ticks ----------------------------------------------------------------------------------
    def tick_time_us(self, number: int) -> int:
        return self.start_us + number * self.interval_us

    def step(self) -> Tick:
        """Advance the fleet by one interval and return every device's reading for the tick."""
        number = self.ticks
        if number:
            self._advance(self.interval_us / 1e6)
        self.ticks += 1
        time_us = self.tick_time_us(number)
        event_us = self.phase_us + time_us
        temperature = self._temperature(time_us)
        humidity = np.clip(
            self.humidity_base - 1.8 * (temperature - self.climate) + self.humidity_noise,
            3.0,
            100.0,
        )
        return Tick(
            number,
            time_us,
            event_us.tolist(),
            (
                self._second_texts(event_us // 1_000_000),
                _MILLIS[(event_us // 1000) % 1000].tolist(),
                _hundredths(temperature),
                _tenths(self.battery),
                _tenths(np.where(self.is_vehicle, self.speed, humidity)),
                self._lat_texts.update(self.lat),
                self._lon_texts.update(self.lon),
                _STATUSES[self._status_base + np.minimum(self.state, self._status_cap)].tolist(),
            ),
        )

    def _second_texts(self, seconds: np.ndarray) -> list:
        """The ISO text to the second of each reading: formatted once per distinct second."""
        cache = self._seconds
        if len(cache) > 4096:
            cache.clear()
        low, high = int(seconds.min()), int(seconds.max())
        if high - low <= 4096:  # a tick spans few seconds: index a table of them
            distinct, which = range(low, high + 1), seconds - low
        else:
            distinct, which = np.unique(seconds, return_inverse=True)
            distinct = distinct.tolist()
        texts = []
        for second in distinct:
            text = cache.get(second)
            if text is None:
                text = cache[second] = second_prefix(second)
            texts.append(text)
        return np.array(texts, dtype=object)[which].tolist()

    # --- payloads -------------------------------------------------------------------------------
    def payloads(self, tick: Tick, event_ids: list) -> list:
        """Every device's clean payload of ``tick`` (bytes, device order): the hot path."""
        pieces, stride = self._pieces, 2 * _SLOTS + 1
        pieces[1::stride] = event_ids
        for slot, column in enumerate(tick.columns, start=1):
            pieces[2 * slot + 1 :: stride] = column
        return "".join(pieces).encode().split(b"\n")[:-1]

    def retimed_payload(
        self, device: int, event_id: str, event_time_text: str, columns: tuple
    ) -> str:
        """The payload of a device's reading (``columns``: its tick's) whose event_time
        member is ``event_time_text`` (JSON) instead: the bytes of editing :meth:`fields`."""
        # Indexed one by one: a faulty record's hot path, where a generator costs more.
        _, _, temperature, battery, third, lat, lon, status = columns
        return self.retime_templates[device] % (
            event_id,
            event_time_text,
            temperature[device],
            battery[device],
            third[device],
            lat[device],
            lon[device],
            status[device],
        )

    def payload(self, device: int, row: tuple) -> str:
        """The clean payload of a reading; ``row`` starts with the event id."""
        return self.templates[device] % row

    def fields(self, device: int, row: tuple) -> list:
        """The same reading as ``[key, JSON text]`` members (layout order), for faults to edit."""
        return [
            ["event_id", f'"{row[0]}"'],
            ["device_id", self._quoted_ids[device]],
            ["event_time", _TIME % (row[1], row[2])],
            ["schema_version", "1"],
            ["temperature_c", row[3]],
            ["battery_pct", row[4]],
            ["speed_kmh" if self.vehicle_flags[device] else "humidity_pct", row[5]],
            ["lat", row[6]],
            ["lon", row[7]],
            ["status", f'"{row[8]}"'],
        ]
