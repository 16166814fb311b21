"""`weir bench chaos`: a chaos run's report becomes the suite's figures and its one target."""

from __future__ import annotations

import json
from pathlib import Path

from weir.bench.chaos import NOTHING_LOST, SUITE, chaos_result
from weir.bench.report import SUITE_ORDER, SUITE_TITLES, write_report
from weir.bench.suites import SUITES
from weir.chaos import KILL, OUTAGE, ChaosReport, Survived


def finished_run(*problems: str) -> ChaosReport:
    report = ChaosReport(
        seed=1,
        minutes=30,
        faults=[
            Survived(40.0, KILL, "stream", "pid 10"),
            Survived(95.5, OUTAGE, "broker", "12s down"),
            Survived(130.0, KILL, "merge", "pid 11"),
            Survived(300.0, KILL, "stream", "pid 12"),
        ],
        counts={"raw": "90,000 = 90,000 acknowledged"},
        acknowledged=90_000,
    )
    report.problems += problems
    return report


def test_a_clean_run_meets_the_target_with_its_records_faults_and_load() -> None:
    result = chaos_result(finished_run(), 1950.0, [1.0, 1.5, 2.0], [3.0, 2.5, 2.0])

    assert result.suite == SUITE and result.passed
    assert result.checks == [{"check": NOTHING_LOST, "value": 0, "met": True}]
    run = result.measurement("chaos-run")
    assert (run.events, run.seconds) == (90_000, 1950.0)
    env = result.environment
    assert (env["kills"], env["kills_by_role"]) == (3, {"merge": 1, "stream": 2})
    assert (env["outages"], env["outage_seconds"]) == (1, ["12s down"])
    assert env["problems"] == [] and env["load_before"] == [1.0, 1.5, 2.0]


def test_a_run_that_lost_records_misses_the_target_and_keeps_what_was_found() -> None:
    lost = "3 records acknowledged but not in RAW (lost)"

    result = chaos_result(finished_run(lost), 1900.0, None, None)

    assert not result.passed
    assert result.checks == [{"check": NOTHING_LOST, "value": 1, "met": False}]
    assert result.environment["problems"] == [lost]


def test_the_suite_is_registered_and_its_figures_reach_the_report(tmp_path: Path) -> None:
    assert SUITE in SUITES and SUITE in SUITE_ORDER and SUITE in SUITE_TITLES

    written = chaos_result(finished_run(), 1950.0, None, None).write(tmp_path / "results")
    _, page = write_report(tmp_path / "results", tmp_path / "performance.md")

    assert json.loads(written.read_text())["passed"] is True
    text = page.read_text("utf-8")
    assert SUITE_TITLES[SUITE] in text and NOTHING_LOST in text
