"""Every weir module imports on its own in a fresh interpreter (no cycle hidden by order)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import weir


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(weir.__path__, prefix="weir."))


def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    script = (
        "import importlib, subprocess, sys\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    probe = subprocess.run([sys.executable, '-c', f'import {name}'],\n"
        "                           capture_output=True, text=True)\n"
        "    if probe.returncode:\n"
        "        failed.append(name + ': ' + probe.stderr.strip().splitlines()[-1])\n"
        "print('\\n'.join(failed))\n"
    )
    modules = _modules()
    assert "weir.schemas" in modules
    result = subprocess.run(
        [sys.executable, "-c", script, *modules], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
