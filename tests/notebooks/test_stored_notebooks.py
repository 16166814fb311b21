"""The notebooks as stored in the repository: no outputs, a parameters cell papermill can
override, the `weir` kernel, and one markdown line saying what to look for before each plot."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from weir.notebook.execute import KERNEL, notebooks

from .conftest import NOTEBOOKS

PATHS = notebooks(NOTEBOOKS)
EXPECTED = ["01_fleet_overview", "02_device_drilldown", "03_data_quality", "04_pipeline_health"]


def read(path: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    return notebook


def code_cells(notebook: nbformat.NotebookNode) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def assigned_names(source: str) -> set[str]:
    return {
        target.id
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def test_the_four_notebooks_exist_in_reading_order() -> None:
    assert [path.stem for path in PATHS] == EXPECTED


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    notebook = read(path)

    for cell in code_cells(notebook):
        assert cell.outputs == [], f"{path.name}: a cell holds outputs; clear them before commit"
        assert cell.execution_count is None, f"{path.name}: a cell holds an execution count"
    assert "papermill" not in notebook.metadata, f"{path.name} is an executed copy"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_opens_with_a_parameters_cell_then_the_lake_in_two_lines(path: Path) -> None:
    first, opening = code_cells(read(path))[:2]

    assert first.metadata.get("tags") == ["parameters"]
    names = assigned_names(first.source)
    assert {"CONF", "DATE_FROM", "DATE_TO"} <= names
    if not path.stem.startswith("04"):  # pipeline health is per query, not per device
        assert "DEVICE" in names
    assert "from weir.notebook import" in opening.source
    assert "lake = open_lake(CONF)" in opening.source


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_weir_kernel(path: Path) -> None:
    assert read(path).metadata.kernelspec.name == KERNEL


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_every_plot_is_tagged_and_follows_a_line_saying_what_to_look_for(path: Path) -> None:
    cells = read(path).cells
    plots = 0
    for index, cell in enumerate(cells):
        shows = cell.cell_type == "code" and "plt.show()" in cell.source
        tagged = "plot" in cell.metadata.get("tags", [])
        assert shows == tagged, f"{path.name} cell {index}: plt.show() and the plot tag disagree"
        if tagged:
            plots += 1
            before = cells[index - 1]
            assert before.cell_type == "markdown" and "Look for" in before.source, (
                f"{path.name} cell {index}: no markdown line saying what to look for"
            )
    assert plots >= 3
