"""The schedules shipped (docs/operations.md): the Airflow DAGs load in a real Airflow, and the
EMR step definition and the cron lines run scripts that exist.

The DAG test runs Airflow from its own virtual environment (``.venv-airflow``, installed by
``make airflow``, which ``make test`` depends on): Airflow never enters the main environment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_PYTHON = PROJECT_ROOT / ".venv-airflow" / "bin" / "python"

# Parses dags/ with Airflow's own DagBag and prints import errors and each task's upstreams.
PROBE = """
import json, sys
from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1], include_examples=False)
print(json.dumps({
    "errors": {path: str(error) for path, error in bag.import_errors.items()},
    "dags": {
        dag.dag_id: {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}
        for dag in bag.dags.values()
    },
}))
"""


@pytest.fixture(scope="module")
def dag_bag(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if not AIRFLOW_PYTHON.exists():
        pytest.fail("no .venv-airflow: run `make airflow` (make test does)")
    environment = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path_factory.mktemp("airflow-home")),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    done = subprocess.run(
        [str(AIRFLOW_PYTHON), "-c", PROBE, str(PROJECT_ROOT / "dags")],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_dags_load_in_airflow_without_import_errors(dag_bag: dict) -> None:
    assert dag_bag["errors"] == {}
    assert set(dag_bag["dags"]) == {"weir_hourly", "weir_maintenance"}


def test_hourly_dag_checks_the_batch_run_before_the_merge_and_the_unified_table_after(
    dag_bag: dict,
) -> None:
    assert dag_bag["dags"]["weir_hourly"] == {
        "batch_rebuild": [],
        "dq_batch_run": ["batch_rebuild"],
        "merge": ["dq_batch_run"],
        "dq_unified": ["merge"],
        "stream_running": [],
    }


def test_maintenance_dag_is_one_maintenance_job(dag_bag: dict) -> None:
    assert dag_bag["dags"]["weir_maintenance"] == {"maintain": []}


def _scripts(arguments: list[str]) -> list[str]:
    return [arg for arg in arguments if arg.endswith(".py")]


def test_emr_steps_run_existing_jobs_in_pipeline_order() -> None:
    steps = json.loads((PROJECT_ROOT / "schedules" / "emr-steps.json").read_text("utf-8"))
    scripts = [_scripts(step["HadoopJarStep"]["Args"])[0] for step in steps]
    assert [Path(script).name for script in scripts] == [
        "rebuild.py",
        "run_checks.py",
        "merge.py",
        "run_checks.py",
    ]
    for script in scripts:
        relative = script.split("/jobs/", 1)[1]
        assert (PROJECT_ROOT / "jobs" / relative).is_file(), script


def test_cron_lines_name_existing_commands_and_valid_schedules() -> None:
    lines = [
        line
        for line in (PROJECT_ROOT / "schedules" / "weir.crontab").read_text("utf-8").splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(lines) >= 3
    for line in lines:
        fields = line.split()
        assert all(re.fullmatch(r"[\d*/,-]+", field) for field in fields[:5]), line
        assert "weir " in line, line
