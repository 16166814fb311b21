"""`weir dq run --every`: runs until stopped, a failed check does not end the loop, and the
exit code is the last run's. The check run itself is replaced by a recorded fake."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest

from weir.errors import ChecksFailedError
from weir.quality import run as run_module
from weir.quality.outcomes import CheckOutcome

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)


def report(success: bool, severity: str = "critical") -> run_module.CheckReport:
    outcome = CheckOutcome("raw", "raw/telemetry", 3, "x", severity, success, "1", "= 0")
    return run_module.CheckReport("batch-1", NOW, "batch-1", ("raw",), (outcome,), "docs")


def test_loop_runs_until_stopped_through_failed_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    verdicts = iter([False, False, True])
    monkeypatch.setattr(run_module, "run_checks", lambda *args: report(next(verdicts)))
    stop = threading.Event()
    seen: list[bool] = []

    def on_report(done: run_module.CheckReport) -> None:
        seen.append(done.passed)
        if len(seen) == 3:
            stop.set()

    last = run_module.check_every(None, None, None, 0.01, stop, on_report)
    assert seen == [False, False, True]
    assert last is not None and last.passed


def test_stop_before_the_first_run_runs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "run_checks", lambda *args: pytest.fail("ran"))
    stop = threading.Event()
    stop.set()
    assert run_module.check_every(None, None, None, 60, stop) is None


def test_failed_critical_check_raises_exit_3_and_a_failed_warning_does_not() -> None:
    with pytest.raises(ChecksFailedError, match="1 critical data-quality check"):
        run_module.require_passed(report(False))
    run_module.require_passed(report(False, severity="warning"))
    assert ChecksFailedError.exit_code == 3
