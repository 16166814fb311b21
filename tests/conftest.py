"""Shared fixtures: one SparkSession for the whole run (local[2], small shuffles, no UI)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from weir.config import WeirConfig, config_from_mapping, load_config
from weir.lake import LakeLayout

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOCAL_CONF = PROJECT_ROOT / "conf" / "local.yaml"


def local_config(lake_root: Path, **section_overrides: dict) -> WeirConfig:
    """conf/local.yaml with the lake moved to ``lake_root`` and sections patched (for tests)."""
    document = load_config(str(LOCAL_CONF)).model_dump()
    document["lake"] = {"root": f"file://{lake_root}", "landing": None}
    document["spark"]["jars_dir"] = str(PROJECT_ROOT / ".jars" / "spark")
    document["infra"]["state_dir"] = str(lake_root.parent / "state")
    for section, values in section_overrides.items():
        document[section] = {**document[section], **values}
    return config_from_mapping(document, environ={})


@pytest.fixture(scope="session")
def weir_config(tmp_path_factory: pytest.TempPathFactory) -> WeirConfig:
    root = tmp_path_factory.mktemp("session") / "lake"
    return local_config(
        root,
        spark={
            "shuffle_partitions": 2,
            "driver_memory": "2g",
            "settings": {
                "spark.ui.enabled": "false",
                "spark.ui.showConsoleProgress": "false",
                "spark.sql.adaptive.coalescePartitions.enabled": "false",
            },
        },
    )


@pytest.fixture(scope="session")
def spark(weir_config: WeirConfig) -> SparkSession:
    from weir.spark import build_session

    session = build_session(weir_config, app_name="weir-tests")
    yield session
    session.stop()


@pytest.fixture
def lake(tmp_path: Path) -> LakeLayout:
    """A fresh, empty lake for one test."""
    return LakeLayout(root=f"file://{tmp_path}/lake")
