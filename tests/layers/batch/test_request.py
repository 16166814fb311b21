"""What a batch run is asked to do (weir.layers.batch.request): arguments, cutoff, horizon."""

from __future__ import annotations

import importlib.util
from datetime import date, timedelta
from pathlib import Path

import pytest

from weir.cli import main
from weir.config import ConfigError, WeirConfig
from weir.control import (
    MODE_FULL,
    MODE_INCREMENTAL,
    MODE_RANGE,
)
from weir.errors import EXIT_BAD_CONFIG
from weir.lake import LakeLayout
from weir.layers.batch import (
    batch_horizon,
    default_cutoff,
    parse_cutoff,
    rebuild_request,
)

from .builders import (
    JOB,
    lake_entries,
    utc,
    write_conf,
)

# --- Arguments and arithmetic (no Spark) --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T10:00:00Z", "2026-03-01T10:00:00+00:00"),
        ("2026-03-01T12:30:00+02:00", "2026-03-01T10:30:00+00:00"),
        ("2026-03-01T05:00-0530", "2026-03-01T10:30:00+00:00"),
        ("2026-03-01T10:00:00.1234567Z", "2026-03-01T10:00:00.123456+00:00"),
    ],
)
def test_cutoff_with_z_or_offset_is_read_as_utc(text: str, expected: str) -> None:
    parsed = parse_cutoff(text)
    assert parsed.isoformat() == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-01T10:00:00",  # no offset: ambiguous
        "2026-03-01",
        "yesterday",
        "2026-02-30T10:00:00Z",  # no such day
        "2026-03-01T24:00:00Z",
        "2026-03-01 10:00:00Z",
        "2026-03-01T10:00:00+25:00",
    ],
)
def test_cutoff_without_offset_or_malformed_is_a_config_error_naming_cutoff(text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_cutoff(text)
    assert raised.value.key == "--cutoff"


def test_default_cutoff_is_now_floored_to_the_hour() -> None:
    now = utc("2026-03-01T10:59:59.999999Z")
    assert default_cutoff(now) == utc("2026-03-01T10:00:00Z")
    assert rebuild_request(now=now).cutoff == utc("2026-03-01T10:00:00Z")


@pytest.mark.parametrize(
    ("cutoff", "lateness", "horizon"),
    [
        ("2026-03-01T10:00:00Z", 10, "2026-03-01T09:50:00Z"),
        ("2026-03-01T10:00:59.5Z", 10, "2026-03-01T09:50:00Z"),  # floored to the minute
        ("2026-03-01T00:05:00Z", 10, "2026-02-28T23:55:00Z"),  # across midnight
        ("2026-03-01T10:07:30Z", 0, "2026-03-01T10:07:00Z"),
    ],
)
def test_horizon_is_cutoff_minus_lateness_floored_to_the_minute(
    cutoff: str, lateness: int, horizon: str
) -> None:
    assert batch_horizon(utc(cutoff), lateness) == utc(horizon)


def test_cutoff_in_the_future_is_a_config_error() -> None:
    now = utc("2026-03-01T10:00:00Z")
    assert rebuild_request("2026-03-01T10:00:00Z", now=now).cutoff == now  # now itself is fine
    with pytest.raises(ConfigError) as raised:
        rebuild_request("2026-03-01T10:00:01Z", now=now)
    assert raised.value.key == "--cutoff"


@pytest.mark.parametrize(
    ("arguments", "key"),
    [
        ({"date_from": "2026-03-01"}, "--to"),
        ({"date_to": "2026-03-01"}, "--from"),
        ({"date_from": "2026-03-02", "date_to": "2026-03-01"}, "--from"),
        ({"date_from": "2026-3-1", "date_to": "2026-03-01"}, "--from"),
        ({"date_from": "2026-03-01", "date_to": "20260302"}, "--to"),
        ({"date_from": "2026-03-01", "date_to": "2026-03-01", "full": True}, "--full"),
    ],
)
def test_bad_date_range_is_a_config_error_naming_the_option(arguments: dict, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        rebuild_request("2026-03-01T00:00:00Z", now=utc("2026-03-05T00:00:00Z"), **arguments)
    assert raised.value.key == key


def test_request_modes() -> None:
    now = utc("2026-03-05T00:00:00Z")
    assert rebuild_request(now=now).mode == MODE_INCREMENTAL
    assert rebuild_request(full=True, now=now).mode == MODE_FULL
    ranged = rebuild_request(date_from="2026-03-01", date_to="2026-03-02", now=now)
    assert (ranged.mode, ranged.date_from, ranged.date_to) == (
        MODE_RANGE,
        date(2026, 3, 1),
        date(2026, 3, 2),
    )


@pytest.mark.parametrize(
    "cutoff", ["2026-03-01T10:00:00", "not-a-time", "2999-01-01T00:00:00Z"], ids=str
)
def test_cli_bad_cutoff_exits_2_and_writes_nothing(
    cutoff: str, config: WeirConfig, lake: LakeLayout, tmp_path: Path
) -> None:
    conf = write_conf(config, tmp_path)
    before = lake_entries(lake)
    assert main(["batch", "rebuild", "--conf", conf, "--cutoff", cutoff]) == EXIT_BAD_CONFIG
    assert lake_entries(lake) == before


def test_job_bad_cutoff_exits_2(config: WeirConfig, lake: LakeLayout, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("weir_job_batch_rebuild", JOB)
    assert spec is not None and spec.loader is not None
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    conf = write_conf(config, tmp_path)
    assert job.main(["--conf", conf, "--cutoff", "2026-03-01T10:00:00"]) == EXIT_BAD_CONFIG
    assert lake_entries(lake) == set()
