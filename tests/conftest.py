"""Shared fixtures: one SparkSession for the whole run (local[2], small shuffles, no UI)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from weir.config import WeirConfig, config_from_mapping, load_config
from weir.infra import private_stack as _private_stack
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
        if section == "spark" and "settings" in values:
            # Tests run with the local profile's settings, plus their own.
            values = {**values, "settings": {**document["spark"]["settings"], **values["settings"]}}
        document[section] = {**document[section], **values}
    return config_from_mapping(document, environ={})


# Folders whose test files share a session fixture too costly to build on both xdist workers
# (the notebooks' lake and kernels; the EMR package, whose environment cache two builds at once
# would race on). Every other file is a group of its own: module fixtures are built once.
SHARED_FIXTURE_FOLDERS = ("notebooks", "deploy")


def xdist_group_of(item: pytest.Item) -> str:
    relative = Path(str(item.path)).relative_to(PROJECT_ROOT / "tests")
    if relative.parts[0] in SHARED_FIXTURE_FOLDERS:
        return relative.parts[0]
    return relative.as_posix()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """For `make test` (pytest-xdist, --dist loadgroup): each test's group, and the groups
    holding slow tests first, so that a long one does not start last and run alone.

    Without xdist only the order changes (a stable sort: files keep their order within the
    slow and the fast part)."""
    groups = {item: xdist_group_of(item) for item in items}
    slow_groups = {groups[item] for item in items if item.get_closest_marker("slow")}
    if config.pluginmanager.hasplugin("xdist"):
        for item in items:
            item.add_marker(pytest.mark.xdist_group(groups[item]))
    items.sort(key=lambda item: groups[item] not in slow_groups)


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


@pytest.fixture(scope="session")
def local_infra(weir_config: WeirConfig) -> Iterator[WeirConfig]:
    """A running local stack, private to this test session; yields the config pointing at it.

    What runs: the single-node KRaft Kafka broker and the moto AWS endpoint of
    `weir infra up`, on free (never the default 9092/9093/5055) ports on 127.0.0.1, with their
    state, PID files and logs under ``weir_config.infra.state_dir`` (a tmp folder). So a
    developer's own `weir infra up` stack and other test sessions are never touched.

    The yielded config is ``weir_config`` with ``infra.*``,
    ``sources.kafka.bootstrap_servers``, ``sources.kinesis.endpoint_url`` and
    ``aws.endpoint_url`` pointing at that stack. The telemetry topic
    (``sources.kafka.topic``, ``sources.kafka.partitions`` partitions) and the Kinesis stream
    (``sources.kinesis.stream``, ``sources.kinesis.shards`` shards) exist and may already hold
    other tests' records: a test that needs an empty topic or stream creates its own under a
    unique name. Never stop the stack from a test; it stops when the session ends.

    Starting takes ~10 s (the broker's JVM), once per session. Tests using it are slow tests:
    mark them ``@pytest.mark.slow``.
    """
    with _private_stack(weir_config, Path(weir_config.infra.state_dir)) as config:
        yield config
