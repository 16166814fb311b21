"""The analysts' notebooks executed headless, each in its own `weir` kernel, as `make notebooks`
runs them: against the simulated lake of ``notebook_lake`` (every cell runs, every plot cell
shows an image, the parameters papermill injects are the ones used), against an empty lake (one
sentence, no traceback), and with and without data-quality results.

A kernel per notebook is unavoidable (each starts its own Spark driver); the lake is built once
per session, and the notebooks on the empty lake stop before a JVM starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Optional

import nbformat
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from weir.notebook.execute import NotebookRun, NotebookRunError, execute, notebooks
from weir.schemas import DQ_RESULTS_SCHEMA

from .conftest import NOTEBOOKS, UTC, NotebookLake, notebook_config, write_conf

pytestmark = pytest.mark.slow

NAMES = [path.stem for path in notebooks(NOTEBOOKS)]
WITH_DQ = "03_data_quality with dq/results"
FAILED_CHECK = "expect_quarantine_ratio_to_be_below"


@dataclass
class Executed:
    run: Optional[NotebookRun]
    error: Optional[NotebookRunError]
    cells: list

    def stdout(self) -> str:
        return "".join(
            output.get("text", "")
            for cell in self.cells
            for output in cell.get("outputs", [])
            if output.get("output_type") == "stream" and output.get("name") == "stdout"
        )


def run_notebook(name: str, out: Path, parameters: dict) -> Executed:
    notebook = NOTEBOOKS / f"{name}.ipynb"
    try:
        run = execute(notebook, out, parameters)
        error = None
    except NotebookRunError as failure:
        run, error = None, failure
    executed = nbformat.read(out / notebook.name, as_version=4)
    return Executed(run, error, executed.cells)


def write_dq_results(spark: SparkSession, location: str, now: datetime) -> None:
    """Two data-quality runs as `weir dq run` records them: all passed, then one critical
    failure. Written by hand: the notebook's rendering is under test, not the checks."""
    checks = [
        ("unified", "serving/telemetry_minute", "expect_column_values_to_not_be_null", "critical"),
        ("batch_run", "quarantine/telemetry", FAILED_CHECK, "critical"),
        ("agreement", "batch/telemetry_minute", "expect_batch_speed_agreement", "warning"),
    ]
    rows = []
    for number, run_time in enumerate((now - timedelta(minutes=30), now - timedelta(minutes=5))):
        for suite, table, expectation, severity in checks:
            success = not (number == 1 and expectation == FAILED_CHECK)
            observed = "0.09" if not success else "0.01"
            rows.append(
                (f"dq-{number}", run_time, suite, table, 1, expectation, severity, success,
                 observed, "0.05")
            )  # fmt: skip
    spark.createDataFrame(rows, DQ_RESULTS_SCHEMA).write.format("delta").save(location)


@pytest.fixture(scope="module")
def executed(
    notebook_lake: NotebookLake, spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Executed]:
    """Every notebook on the lake (02 pointed at a chosen device and dates, the others on their
    defaults), then 03 again once data-quality results exist."""
    out = tmp_path_factory.mktemp("executed")
    conf = str(notebook_lake.conf)
    drilldown = {
        "DATE_FROM": notebook_lake.latest_date.isoformat(),
        "DATE_TO": notebook_lake.latest_date.isoformat(),
        "DEVICE": notebook_lake.device,
    }
    results = {
        name: run_notebook(
            name, out, {"CONF": conf, **(drilldown if name.startswith("02") else {})}
        )
        for name in NAMES
    }
    write_dq_results(spark, notebook_lake.layout.dq_results, datetime.now(UTC))
    results[WITH_DQ] = run_notebook("03_data_quality", out / "with-dq", {"CONF": conf})
    return results


def plot_cells(cells: list) -> list:
    return [cell for cell in cells if "plot" in cell.get("metadata", {}).get("tags", [])]


@pytest.mark.parametrize("name", [*NAMES, WITH_DQ])
def test_notebook_runs_headless_without_a_cell_error(executed, name: str) -> None:
    result = executed[name]

    assert result.error is None, result.error.output if result.error else ""
    stderr = [
        output.get("text", "")
        for cell in result.cells
        for output in cell.get("outputs", [])
        if output.get("name") == "stderr"
    ]
    assert stderr == [], "Spark's log or a warning reached the notebook: " + "".join(stderr)[:2000]


@pytest.mark.parametrize("name", [*NAMES, WITH_DQ])
def test_every_plot_cell_produces_an_image(executed, name: str) -> None:
    cells = plot_cells(executed[name].cells)

    assert cells, f"{name} has no cell tagged plot"
    for cell in cells:
        images = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        assert len(images) >= 1, cell["source"][:200]


@pytest.mark.parametrize("name", NAMES)
def test_html_export_embeds_every_plot(executed, name: str) -> None:
    run = executed[name].run
    assert run is not None and run.html is not None

    html = run.html.read_text(encoding="utf-8")

    assert html.count("data:image/png;base64") >= len(plot_cells(executed[name].cells))


def test_parameters_override_the_device_and_dates(
    executed, notebook_lake: NotebookLake, spark: SparkSession
) -> None:
    day = notebook_lake.latest_date
    rows = (
        spark.read.format("delta")
        .load(notebook_lake.layout.serving)
        .where((F.col("device_id") == notebook_lake.device) & (F.col("event_date") == day))
    )
    layers = {row["layer"]: row["count"] for row in rows.groupBy("layer").count().collect()}
    events = rows.agg(F.sum("event_count")).first()[0]

    expected = (
        f"{notebook_lake.device}, {day.isoformat()}: {sum(layers.values())} minutes "
        f"({layers.get('batch', 0)} batch, {layers.get('speed', 0)} speed), {events} events"
    )
    assert expected in executed["02_device_drilldown"].stdout()


def test_default_dates_are_the_last_two_days_with_data(
    executed, notebook_lake: NotebookLake
) -> None:
    last = notebook_lake.latest_date
    shown = f"{(last - timedelta(days=1)).isoformat()} to {last.isoformat()}"

    assert f"weir.telemetry_minute, {shown};" in executed["01_fleet_overview"].stdout()


def test_data_quality_without_results_says_no_run_exists_and_goes_on(executed) -> None:
    result = executed["03_data_quality"]
    stdout = result.stdout()

    assert "no data-quality run exists yet" in stdout
    assert "`weir dq run --conf" in stdout
    quarantine_plot = [c for c in plot_cells(result.cells) if "quarantine_telemetry" in c.source]
    assert quarantine_plot and "records" in str(quarantine_plot[0].outputs)  # the table shown


def test_data_quality_with_results_shows_the_failed_critical_check(executed) -> None:
    stdout = executed[WITH_DQ].stdout()

    assert "no data-quality run exists yet" not in stdout
    assert re.search(r"Latest run dq-1: 1 of 3 checks failed", stdout), stdout
    assert FAILED_CHECK in str(plot_cells(executed[WITH_DQ].cells)[0].outputs)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_on_an_empty_lake_says_so_in_a_sentence_not_a_traceback(
    name: str, weir_config, tmp_path: Path
) -> None:
    config = notebook_config(weir_config, tmp_path)
    conf = write_conf(config, tmp_path / "empty.yaml")

    result = run_notebook(name, tmp_path / "out", {"CONF": str(conf)})

    assert result.error is not None
    assert result.error.output == (
        f"The lake at {config.lake.root} is empty: no Weir table has been written there yet. "
        f"`make demo` fills a local lake end to end; elsewhere run `weir stream`, "
        f"`weir batch rebuild` and `weir merge` (with --conf {conf}), or check lake.root in "
        f"{conf}."
    )
