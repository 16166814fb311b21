"""The lake layout (docs/contract.md, "Lake layout"): every path from one root, local or on S3."""

from __future__ import annotations

from itertools import permutations
from pathlib import Path

import pytest
import yaml

from weir.config import config_from_mapping
from weir.lake import LakeLayout, local_path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# docs/contract.md, "Lake layout", relative to the root.
TABLES = {
    "raw": "raw/telemetry",
    "quarantine": "quarantine/telemetry",
    "speed": "speed/telemetry_minute",
    "batch": "batch/telemetry_minute",
    "serving": "serving/telemetry_minute",
}
CONTROL = {
    "batch_runs": "_control/batch_runs",
    "merge_runs": "_control/merge_runs",
    "stream_progress": "_control/stream_progress",
    "writer_fences": "_control/writer_fences",
    "kinesis_gaps": "_control/kinesis_gaps",
    "dq_results": "dq/results",
    "dq_docs": "dq/docs",
}
ROOTS = ["file:///srv/weir/.lake", "s3://acme-telemetry/weir", "s3a://acme-telemetry/a/b"]


def every_path(lake: LakeLayout) -> dict[str, str]:
    paths = {name: getattr(lake, name) for name in (*TABLES, *CONTROL, "landing")}
    paths["checkpoint"] = lake.checkpoint("raw-archiver")
    return paths


@pytest.mark.parametrize("root", ROOTS)
def test_every_design_path_hangs_off_the_one_root(root: str) -> None:
    lake = LakeLayout(root=root)
    expected = {**TABLES, **CONTROL, "landing": "landing/telemetry"}
    expected["checkpoint"] = "_checkpoints/raw-archiver"
    assert every_path(lake) == {name: f"{root}/{rel}" for name, rel in expected.items()}


@pytest.mark.parametrize("root", ROOTS)
def test_no_path_lies_inside_another(root: str) -> None:
    """A Delta table inside another table's folder would be read as that table's data."""
    paths = every_path(LakeLayout(root=root)).values()
    assert len(set(paths)) == len(paths)
    for outer, inner in permutations(paths, 2):
        assert not inner.startswith(outer + "/"), (outer, inner)


def test_trailing_slash_on_the_root_is_ignored() -> None:
    assert LakeLayout(root="s3://acme/weir/").raw == "s3://acme/weir/raw/telemetry"


def test_landing_override_replaces_the_default_folder() -> None:
    lake = LakeLayout(root="s3://acme/weir", landing_root="s3://acme/firehose/telemetry/")
    assert lake.landing == "s3://acme/firehose/telemetry"
    assert lake.raw == "s3://acme/weir/raw/telemetry"


def test_layout_from_the_local_config_is_under_the_project(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    document = yaml.safe_load((PROJECT_ROOT / "conf" / "local.yaml").read_text("utf-8"))
    lake = LakeLayout.from_config(config_from_mapping(document, environ={}))
    assert lake.raw == f"file://{PROJECT_ROOT}/.lake/raw/telemetry"
    assert lake.landing == f"file://{PROJECT_ROOT}/.lake/landing/telemetry"
    assert local_path(lake.serving) == f"{PROJECT_ROOT}/.lake/serving/telemetry_minute"


def test_layout_from_the_emr_config_lands_from_firehose() -> None:
    document = yaml.safe_load((PROJECT_ROOT / "conf" / "emr.yaml").read_text("utf-8"))
    config = config_from_mapping(document, environ={"WEIR_BUCKET": "acme"})
    lake = LakeLayout.from_config(config)
    assert lake.batch == "s3://acme/weir/batch/telemetry_minute"
    assert lake.landing == "s3://acme/firehose/telemetry"


@pytest.mark.parametrize("name", ["raw-archiver", "speed_layer", "s", "a" * 64])
def test_checkpoint_accepts_plain_query_names(name: str) -> None:
    assert (
        LakeLayout(root="s3://acme/weir").checkpoint(name) == f"s3://acme/weir/_checkpoints/{name}"
    )


@pytest.mark.parametrize(
    "name", ["", "Raw", "1st", "-x", "../raw", "a/b", "a b", "raw\n", "a" * 65]
)
def test_checkpoint_rejects_names_that_could_escape_or_collide(name: str) -> None:
    with pytest.raises(ValueError, match="query name"):
        LakeLayout(root="s3://acme/weir").checkpoint(name)


def test_local_path_only_for_file_uris() -> None:
    assert local_path("file:///srv/lake/raw") == "/srv/lake/raw"
    with pytest.raises(ValueError, match="not a local"):
        local_path("s3://acme/weir")
