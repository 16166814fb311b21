"""Headless runs of the analysts' notebooks (`make notebooks`, the tests): execute, then export.

Each notebook runs in its own `weir` kernel (the one `make setup` registers inside the
project's virtual environment) through papermill, which injects the parameters after the cell
tagged ``parameters``. The executed copy and a self-contained HTML export (plots embedded as
PNG) are written side by side under the output folder. A cell error stops that notebook:
:class:`NotebookRunError` carries what the failing cell printed (a :class:`NotebookError`
prints one sentence, not a traceback).

    python -m weir.notebook.execute --conf conf/local.yaml --out build/notebooks
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from weir.errors import WeirError

KERNEL = "weir"
NOTEBOOKS_DIR = Path("notebooks")
OUTPUT_DIR = Path("build") / "notebooks"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class NotebookRunError(WeirError):
    """A notebook stopped at a cell error; ``output`` is what that cell showed."""

    def __init__(self, notebook: Path, executed: Path, output: str) -> None:
        super().__init__(f"{notebook.name} stopped (executed copy: {executed}): {output}")
        self.notebook = notebook
        self.executed = executed
        self.output = output


@dataclass(frozen=True)
class NotebookRun:
    notebook: Path
    executed: Path
    html: Optional[Path]
    seconds: float


def notebooks(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The analysts' notebooks in reading order (their names start with a number)."""
    return sorted(p for p in folder.glob("[0-9]*.ipynb") if p.is_file())


def plain(text: str) -> str:
    """Kernel output without terminal colours."""
    return _ANSI.sub("", text)


def execute(
    notebook: Path,
    out_dir: Path,
    parameters: Mapping[str, Any],
    cwd: Optional[Path] = None,
    html: bool = True,
    kernel: str = KERNEL,
) -> NotebookRun:
    """Run ``notebook`` with ``parameters`` in a fresh ``kernel``; write the executed copy
    (and its HTML export) to ``out_dir``. Raises :class:`NotebookRunError` on a cell error,
    after writing the executed copy that shows it."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / notebook.name
    started = time.monotonic()
    try:
        papermill.execute_notebook(
            str(notebook),
            str(executed),
            parameters=dict(parameters),
            kernel_name=kernel,
            cwd=str(cwd or notebook.parent),
            progress_bar=False,
            request_save_on_cell_execute=False,
        )
    except PapermillExecutionError as error:
        shown = "\n".join(plain(line) for line in error.traceback)
        shown = shown or f"{error.ename}: {error.evalue}"
        raise NotebookRunError(notebook, executed, shown) from None
    seconds = time.monotonic() - started
    return NotebookRun(notebook, executed, export_html(executed) if html else None, seconds)


def export_html(executed: Path) -> Path:
    """A self-contained HTML page of an executed notebook (images inline), beside it."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    target = executed.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target


def _has_unified_table(conf: str) -> bool:
    from weir.config import load_config
    from weir.lake import LakeLayout, local_path

    root = LakeLayout.from_config(load_config(conf)).serving
    if not root.startswith("file://"):
        return True  # an object-store lake: let the notebooks say what they find
    return (Path(local_path(root)) / "_delta_log").is_dir()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m weir.notebook.execute", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--conf", default="conf/local.yaml", help="configuration file")
    parser.add_argument("--out", default=str(OUTPUT_DIR), help="folder for executed copies")
    parser.add_argument("--notebooks", default=str(NOTEBOOKS_DIR), help="folder of notebooks")
    parser.add_argument(
        "--demo-if-empty",
        action="store_true",
        help="run `weir demo` first when the local lake has no unified table yet",
    )
    args = parser.parse_args(argv)
    if args.demo_if_empty and not _has_unified_table(args.conf):
        print(f"no unified table in the lake of {args.conf} yet: running `weir demo` first")
        weir = Path(sys.executable).parent / "weir"
        subprocess.run([str(weir), "demo", "--conf", args.conf], check=True)
    out_dir = Path(args.out)
    failed = 0
    for notebook in notebooks(Path(args.notebooks)):
        try:
            # The kernel starts in the project folder, so CONF resolves as on the command line.
            run = execute(notebook, out_dir, {"CONF": args.conf}, cwd=Path.cwd())
        except NotebookRunError as error:
            failed += 1
            print(f"{notebook.name}: FAILED, see {error.executed}\n{error.output}")
            continue
        print(f"{notebook.name}: {run.seconds:.0f} s -> {run.executed}, {run.html}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
