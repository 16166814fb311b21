"""Every entry point runs through `run_job`: the same exit codes, however it was started."""

from __future__ import annotations

import logging

import pytest

from weir.config import ConfigError
from weir.entry import interval_seconds, parse_duration, run_job
from weir.errors import (
    EXIT_BAD_CONFIG,
    EXIT_CHECKS_FAILED,
    EXIT_OK,
    EXIT_RUNTIME_FAILURE,
    ChecksFailedError,
    WeirError,
)


def raising(error: Exception):
    def work() -> None:
        raise error

    return work


def run_quietly(work) -> tuple[int, list[tuple[str, str]]]:
    reported: list[tuple[str, str]] = []
    code = run_job(
        work, report=lambda kind, reason: reported.append((kind, reason)), log_level=None
    )
    return code, reported


def test_work_that_returns_nothing_exits_0() -> None:
    assert run_quietly(lambda: None) == (EXIT_OK, [])


def test_work_may_return_its_own_exit_code() -> None:
    assert run_quietly(lambda: 4) == (4, [])


def test_a_configuration_error_exits_2_naming_the_key() -> None:
    code, reported = run_quietly(raising(ConfigError("lake.root", "not a URI")))
    assert code == EXIT_BAD_CONFIG
    assert reported == [("configuration error", "lake.root: not a URI")]


def test_a_run_time_failure_exits_1_with_its_reason() -> None:
    code, reported = run_quietly(raising(WeirError("no raw table")))
    assert code == EXIT_RUNTIME_FAILURE
    assert reported == [("failed", "no raw table")]


def test_failed_critical_checks_exit_3_not_1() -> None:
    code, reported = run_quietly(raising(ChecksFailedError("2 critical checks failed")))
    assert code == EXIT_CHECKS_FAILED
    assert reported == [("failed", "2 critical checks failed")]


def test_a_bug_is_not_swallowed_it_keeps_its_traceback() -> None:
    with pytest.raises(ZeroDivisionError):
        run_quietly(lambda: 1 / 0)


def test_failures_are_logged_by_default(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="weir"):
        code = run_job(raising(WeirError("the broker is gone")), log_level=None)
    assert code == EXIT_RUNTIME_FAILURE
    assert "failed the broker is gone" in caplog.text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("2h", 7200.0), ("1d", 86400.0), ("1.5m", 90.0)],
)
def test_durations_read_with_their_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "-1s", "m", "1w"])
def test_a_bad_duration_names_the_option(text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_duration(text, "--every")
    assert raised.value.key == "--every"


@pytest.mark.parametrize(("text", "seconds"), [("1", 1), ("120", 120), ("5m", 300), ("1d", 86_400)])
def test_an_interval_is_whole_seconds_from_one_second_to_one_day(text: str, seconds: int) -> None:
    assert interval_seconds(text) == seconds


@pytest.mark.parametrize("text", ["0", "0.5s", "1.5", "2d", "abc"])
def test_an_interval_outside_one_second_to_one_day_is_refused(text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        interval_seconds(text)
    assert raised.value.key == "--every"
