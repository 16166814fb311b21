"""`weir chaos` (docs/operations.md, "Chaos"): the fault plan, the report, and the CI run."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import pytest
import yaml
from pyspark.sql import SparkSession

from weir.chaos import (
    KILL,
    OUTAGE,
    ChaosOptions,
    ChaosReport,
    Survived,
    fault_plan,
    minute_differences,
)
from weir.config import WeirConfig
from weir.schemas import LAYER_BATCH, LAYER_SPEED, MINUTE_SCHEMA

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
def test_a_three_minute_chaos_run_loses_and_duplicates_nothing(
    weir_config: WeirConfig, tmp_path: Path
) -> None:
    # The CI chaos run: seeded, so the same faults at the same moments each time. It starts
    # its own broker and lake under --folder; the session's config gives it the jars.
    conf = tmp_path / "weir.yaml"
    conf.write_text(yaml.safe_dump(weir_config.model_dump()), "utf-8")
    arguments = ["--minutes", "3", "--seed", "11", "--folder", str(tmp_path / "run")]
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


def window(device: str, count: int, temp: float | None, layer: str = LAYER_BATCH) -> tuple:
    """A MINUTE_SCHEMA row of 09:59 on 2026-03-01."""
    values = {
        "device_id": device,
        "window_start": datetime(2026, 3, 1, 9, 59),
        "window_end": datetime(2026, 3, 1, 10, 0),
        "event_date": date(2026, 3, 1),
        "event_count": count,
        "temperature_c_avg": temp,
        "layer": layer,
        "computed_at": datetime.now(),  # the run's clock: never compared
    }
    return tuple(values.get(name) for name in MINUTE_SCHEMA.fieldNames())


def test_minute_tables_are_compared_by_key_with_doubles_equal_up_to_summation_order(
    spark: SparkSession,
) -> None:
    """The 30-minute run's false alarm: an average of 21.6859375 summed in two orders rounded to
    21.685937 on one side and 21.685938 on the other; a tolerance, not rounding, decides."""
    exact = 21.6859375
    apart = math.nextafter(exact, 0.0)
    assert round(exact, 6) != round(apart, 6)

    def table(*rows: tuple):
        return spark.createDataFrame(list(rows), MINUTE_SCHEMA)

    view = table(window("veh-1", 64, exact), window("veh-2", 3, 20.0))
    resummed = table(window("veh-1", 64, apart), window("veh-2", 3, 20.0))
    assert minute_differences(view, resummed) == {"only_left": 0, "only_right": 0, "changed": 0}

    recounted = table(window("veh-1", 65, exact), window("veh-3", 3, None))
    assert minute_differences(view, recounted) == {"only_left": 1, "only_right": 1, "changed": 1}
    other = table(window("veh-1", 64, exact + 1e-6), window("veh-2", 3, 20.0, LAYER_SPEED))
    assert minute_differences(view, other) == {"only_left": 0, "only_right": 0, "changed": 2}
