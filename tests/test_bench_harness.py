"""The benchmark harness's producer process: the live suites' simulator runs outside the
driver's interpreter, and its result (or its failure) comes back."""

from __future__ import annotations

from pathlib import Path

import pytest

from weir.bench.harness import simulate_in_own_process
from weir.config import WeirConfig
from weir.errors import WeirError
from weir.simulate.run import SimulateOptions


def files_config(base: WeirConfig, folder: Path) -> WeirConfig:
    """``base`` with a lake (the landing folder the files sink writes) and ledgers of its own."""
    return base.model_copy(
        update={
            "lake": base.lake.model_copy(update={"root": f"file://{folder}/lake", "landing": None}),
            "infra": base.infra.model_copy(update={"state_dir": str(folder / "state")}),
        }
    )


def test_a_simulation_in_its_own_process_returns_its_result(
    weir_config: WeirConfig, tmp_path: Path
) -> None:
    config = files_config(weir_config, tmp_path)
    options = SimulateOptions(devices=5, rate=0, count=40, sink="files", seed=1)

    result = simulate_in_own_process(config, options)

    assert (result.status, result.acknowledged, result.failed) == ("completed", 40, 0)
    assert result.ledger_dir.is_dir()


def test_a_producer_process_that_dies_is_a_weir_error(
    weir_config: WeirConfig, tmp_path: Path
) -> None:
    with pytest.raises(WeirError, match="producer process exited with 1"):
        simulate_in_own_process(files_config(weir_config, tmp_path), None)
