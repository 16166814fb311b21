"""Fixtures of the serving layer's tests."""

from __future__ import annotations

import pytest

from weir.config import WeirConfig
from weir.lake import LakeLayout

from .builders import (
    config_for,
)


@pytest.fixture
def config(weir_config: WeirConfig, lake: LakeLayout) -> WeirConfig:
    """The session config with the lake moved to this test's tmp lake."""
    return config_for(weir_config, lake)
