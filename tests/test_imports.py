"""Every weir module imports on its own in a fresh interpreter (no cycle hidden by order)."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import weir


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(weir.__path__, prefix="weir."))


def _import_failure(name: str) -> Optional[str]:
    probe = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True)
    if probe.returncode:
        return f"{name}: {(probe.stderr.strip().splitlines() or ['?'])[-1]}"
    return None


def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    modules = _modules()
    assert "weir.schemas" in modules
    # One interpreter per module, a few at a time: each is mostly start-up and imports.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        failures = [failure for failure in pool.map(_import_failure, modules) if failure]
    assert failures == []
