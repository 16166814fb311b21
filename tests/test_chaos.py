"""`weir chaos` (docs/operations.md, "Chaos"): the fault plan, the report, and the CI run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from weir.chaos import KILL, OUTAGE, ChaosOptions, ChaosReport, Survived, fault_plan
from weir.config import WeirConfig

WEIR = Path(sys.executable).parent / "weir"


def test_the_fault_plan_is_the_seeds_and_stays_inside_the_run() -> None:
    options = ChaosOptions(minutes=10, seed=3)
    plan = fault_plan(options)
    assert plan == fault_plan(ChaosOptions(minutes=10, seed=3))
    assert plan != fault_plan(ChaosOptions(minutes=10, seed=4))
    assert len(plan) >= 10 and {f.kind for f in plan} == {KILL, OUTAGE}
    moments = [f.at_s for f in plan]
    assert moments == sorted(moments) and moments[-1] < 10 * 60 - 30
    for fault in plan:
        low, high = options.outage_s if fault.kind == OUTAGE else options.restart_after_s
        assert low <= fault.pause_s <= high


def test_a_report_is_ok_only_without_problems_and_lists_what_was_survived() -> None:
    report = ChaosReport(seed=1, minutes=3, faults=[Survived(12.5, KILL, "merge", "pid 42")])
    assert report.ok
    assert report.lines()[0] == "weir chaos: seed 1, 3 min: 1 kills, 0 outages"
    assert "merge" in report.lines()[1] and report.lines()[-1].startswith("reconciled")
    report.problems.append("3 records acknowledged but not in RAW (lost)")
    assert (
        not report.ok
        and report.lines()[-1] == "PROBLEM: 3 records acknowledged but not in RAW (lost)"
    )


@pytest.mark.slow
def test_a_two_minute_chaos_run_loses_and_duplicates_nothing(
    weir_config: WeirConfig, tmp_path: Path
) -> None:
    # The CI chaos run: seeded, so the same faults at the same moments each time. It starts
    # its own broker and lake under --folder; the session's config gives it the jars.
    conf = tmp_path / "weir.yaml"
    conf.write_text(yaml.safe_dump(weir_config.model_dump()), "utf-8")
    arguments = ["--minutes", "2", "--seed", "11", "--folder", str(tmp_path / "run")]
    done = subprocess.run(
        [str(WEIR), "chaos", "--conf", str(conf), *arguments],
        capture_output=True,
        text=True,
        timeout=1500,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("WEIR")},
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert "reconciled: nothing lost, nothing duplicated" in done.stdout
    kills, outages = map(int, re.search(r"(\d+) kills, (\d+) outages", done.stdout).groups())
    assert kills >= 1 and kills + outages >= 3, done.stdout
