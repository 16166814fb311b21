"""`weir bench simulate` runs both producers against a broker and records what it measured.

Only the shape of the result is checked here: how fast is the benchmark's business, never a
test's (the figures themselves go to bench/results and the notes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weir.bench import simulate
from weir.config import WeirConfig

pytestmark = pytest.mark.slow


def test_simulate_suite_measures_the_tool_and_the_simulator_on_the_same_broker(
    local_infra: WeirConfig, tmp_path: Path
) -> None:
    result = simulate.run(None, events=3000, repeat=1, config=local_infra, running_stack=True)
    written = json.loads(result.write(tmp_path).read_text())

    assert [m["name"] for m in written["measurements"]] == [
        simulate.CEILING,
        simulate.CANDIDATE,
        simulate.PYTHON_CLIENT,
    ]
    assert all(m["events"] == 3000 and m["seconds"] > 0 for m in written["measurements"])
    assert [c["check"] for c in written["checks"]] == [
        "weir-simulate / kafka-producer-perf-test >= 0.5",
        "weir-simulate >= 200,000 events/s",
    ]
    assert written["environment"]["mean_payload_bytes"] > 100
    assert written["environment"]["simulator_share_of_python_client"] > 0
    assert written["environment"]["helper_process"] is None  # too few records to pay
