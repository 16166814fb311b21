"""`weir package`: the packed environment, the manifest, no credential anywhere."""

from __future__ import annotations

import hashlib
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from weir.config import ConfigError, WeirConfig
from weir.deploy.package import (
    ENV_ARCHIVE,
    MANIFEST,
    Package,
    check_wheel_tags,
    environment_requirements,
    pack_environment,
    packaged_config,
)
from weir.errors import WeirError

from .conftest import EMR_PYTHON, with_emr


def fake_venv(root: Path, wheel_tags: dict[str, str]) -> Path:
    """A venv-shaped folder: one module, bytecode, a console script, dist-infos with tags."""
    site = root / "lib" / "python3.9" / "site-packages"
    (site / "pkg" / "__pycache__").mkdir(parents=True)
    (site / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (site / "pkg" / "__pycache__" / "__init__.cpython-39.pyc").write_bytes(b"\0")
    (site / "pip").mkdir()
    (site / "pip" / "__init__.py").write_text("")
    (root / "bin").mkdir()
    (root / "bin" / "activate").write_text(f"VIRTUAL_ENV={root}\n")
    (root / "pyvenv.cfg").write_text("home = /build/machine/bin\n")
    for name, tag in wheel_tags.items():
        info = site / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "WHEEL").write_text(f"Wheel-Version: 1.0\nTag: {tag}\n")
        (info / "direct_url.json").write_text('{"url": "file:///build/machine"}')
    return root


def fake_wheel(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weir/__init__.py", "")
        archive.writestr("weir-0.1.0.dist-info/METADATA", "Name: weir\n")
    return path


def members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_packed_environment_links_to_the_clusters_python_and_is_reproducible(
    tmp_path: Path, weir_config: WeirConfig
) -> None:
    venv = fake_venv(tmp_path / "venv", {"numpy": "cp39-cp39-manylinux_2_17_x86_64"})
    wheel = fake_wheel(tmp_path / "weir-0.1.0-py3-none-any.whl")
    config = with_emr(weir_config, python_home="/usr")

    pack_environment(venv, wheel, config, "3.9.18", tmp_path / "one.tar.gz")
    pack_environment(venv, wheel, config, "3.9.18", tmp_path / "two.tar.gz")

    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.glob("*.tar.gz")}
    assert len(digests) == 1
    entries = members(tmp_path / "one.tar.gz")
    links = {n: m.linkname for n, m in entries.items() if m.issym()}
    assert links == {
        "bin/python3.9": "/usr/bin/python3.9",
        "bin/python3": "python3.9",
        "bin/python": "python3.9",
    }
    site = "lib/python3.9/site-packages"
    assert f"{site}/pkg/__init__.py" in entries
    assert f"{site}/weir/__init__.py" in entries
    assert f"{site}/weir-0.1.0.dist-info/METADATA" in entries
    shipped_not = [n for n in entries if "__pycache__" in n or "pip" in n.split("/")]
    assert shipped_not == []
    assert "bin/activate" not in entries
    assert not [n for n in entries if n.endswith("direct_url.json")]
    with tarfile.open(tmp_path / "one.tar.gz") as tar:
        cfg = tar.extractfile("pyvenv.cfg").read().decode()
    assert cfg.splitlines()[0] == "home = /usr/bin"


@pytest.mark.parametrize(
    ("tag", "fits"),
    [
        ("py3-none-any", True),
        ("cp39-cp39-manylinux_2_17_x86_64.manylinux2014_x86_64", True),
        ("cp39-cp39-manylinux_2_34_x86_64", True),
        ("cp39-cp39-manylinux2014_x86_64", True),
        ("cp39-cp39-manylinux_2_35_x86_64", False),
        ("cp39-cp39-musllinux_1_2_x86_64", False),
        ("cp39-cp39-manylinux_2_17_aarch64", False),
    ],
)
def test_a_wheel_the_cluster_cannot_load_is_refused(
    tmp_path: Path, weir_config: WeirConfig, tag: str, fits: bool
) -> None:
    venv = fake_venv(tmp_path / "venv", {"lib": tag})
    config = with_emr(weir_config, glibc_version="2.34", architecture="x86_64")
    if fits:
        check_wheel_tags(venv, config)
    else:
        with pytest.raises(WeirError, match=r"lib-1\.0\.dist-info is built for"):
            check_wheel_tags(venv, config)


def test_packaged_config_carries_no_credential(weir_config: WeirConfig) -> None:
    assert weir_config.aws.secret_access_key
    text, removed = packaged_config(weir_config)
    assert removed == ["aws.access_key_id", "aws.secret_access_key"]
    assert "secret_access_key: null" in text
    assert f": {weir_config.aws.secret_access_key}\n" not in text


def test_a_kafka_option_holding_a_secret_is_refused(weir_config: WeirConfig) -> None:
    security = weir_config.sources.kafka.security.model_copy(
        update={"options": {"ssl.keystore.password": "hunter2"}}
    )
    kafka = weir_config.sources.kafka.model_copy(update={"security": security})
    config = weir_config.model_copy(
        update={"sources": weir_config.sources.model_copy(update={"kafka": kafka})}
    )
    with pytest.raises(ConfigError) as refused:
        packaged_config(config)
    assert refused.value.key == "sources.kafka.security.options.ssl.keystore.password"


@pytest.mark.parametrize(
    ("emr", "key"),
    [
        ({"python_version": 3.10}, "emr.python_version"),
        ({"s3_encryption": "SSE-KMS"}, "emr.s3_kms_key_id"),
        ({"s3_kms_key_id": "alias/weir"}, "emr.s3_kms_key_id"),
        ({"release_label": "7.12"}, "emr.release_label"),
        ({"code_uri": "weir/code"}, "emr.code_uri"),
        ({"python_home": "usr"}, "emr.python_home"),
    ],
)
def test_bad_emr_settings_name_their_key(weir_config: WeirConfig, emr: dict, key: str) -> None:
    with pytest.raises(ConfigError) as refused:
        with_emr(weir_config, **emr)
    assert refused.value.key == key


# --- the real package, built once per session ---------------------------------------------------


@pytest.mark.slow
def test_manifest_lists_every_file_with_its_size_and_checksum(built_package: Package) -> None:
    root = built_package.root
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {MANIFEST}
    assert {f.path for f in built_package.files} == on_disk
    for entry in built_package.files:
        data = (root / entry.path).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry.bytes, entry.sha256)
    roles = {f.role for f in built_package.files}
    assert roles == {"wheel", "python-env", "job", "conf", "jar", "lock"}
    assert sorted(built_package.paths("job")) == [
        "jobs/batch/rebuild.py",
        "jobs/maintenance/maintain.py",
        "jobs/merge/merge.py",
        "jobs/quality/run_checks.py",
        "jobs/streaming/stream.py",
    ]
    jars = {Path(p).name for p in built_package.paths("jar")}
    assert "spark-sql-kafka-0-10_2.12-3.5.7.jar" in jars
    assert "aws-msk-iam-auth-2.3.2-all.jar" in jars
    assert not [j for j in jars if j.startswith(("delta-", "hadoop-"))], "EMR ships these"
    manifest = built_package.manifest
    assert manifest["target"]["python"] == EMR_PYTHON
    assert manifest["built_with"]["python"].startswith(f"{EMR_PYTHON}.")
    assert manifest["provided_by_cluster"] == ["pyspark"]
    packages = {name.lower() for name in manifest["python_packages"]}
    assert {"delta-spark", "boto3", "pydantic", "pyyaml"} <= packages
    assert not packages & {"pyspark", "typer", "pip"}


@pytest.mark.slow
def test_environment_holds_weir_for_python_39_and_no_credential(
    built_package: Package, weir_config: WeirConfig
) -> None:
    entries = members(built_package.root / ENV_ARCHIVE)
    site = f"lib/python{EMR_PYTHON}/site-packages"
    assert f"{site}/weir/layers/batch/run.py" in entries
    assert f"{site}/delta/tables.py" in entries
    assert not [n for n in entries if n.startswith(f"{site}/pyspark/")]
    home = built_package.manifest["target"]["python_home"]
    assert entries[f"bin/python{EMR_PYTHON}"].linkname == f"{home}/bin/python{EMR_PYTHON}"
    secrets = [weir_config.aws.access_key_id, weir_config.aws.secret_access_key]
    for entry in built_package.files:
        if entry.role in ("conf", "job", "lock"):
            text = (built_package.root / entry.path).read_text("utf-8")
            assert not [s for s in secrets if s and f": {s}" in text], entry.path
    manifest = json.loads((built_package.root / MANIFEST).read_text())
    assert manifest["credentials_removed"] == ["aws.access_key_id", "aws.secret_access_key"]


@pytest.mark.slow
def test_environment_requirements_leave_out_the_clusters_pyspark_and_the_console(
    built_package: Package,
) -> None:
    (wheel,) = built_package.paths("wheel")
    with_deps, without_deps = environment_requirements(built_package.root / wheel)
    names = {r.split("=")[0].split(">")[0].split("<")[0].lower() for r in with_deps}
    assert "pyspark" not in names and "typer" not in names
    assert [r.split("=")[0] for r in without_deps] == ["delta-spark"]
    assert "boto3" in names


@pytest.mark.slow
def test_a_changed_file_fails_the_manifest_check(built_package: Package, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "package"
    shutil.copytree(built_package.root, copy, ignore=shutil.ignore_patterns(ENV_ARCHIVE))
    (copy / ENV_ARCHIVE).write_bytes(b"not the archive")
    with pytest.raises(WeirError, match=r"differs from manifest\.json"):
        Package.load(copy)


def test_nothing_is_packaged_for_the_wrong_python(
    tmp_path: Path, weir_config: WeirConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from weir.cli import main

    conf = tmp_path / "weir.yaml"
    conf.write_text(__import__("yaml").safe_dump(weir_config.model_dump()))
    out = tmp_path / "dist"
    code = main(["package", "--conf", str(conf), "--python", sys.executable, "--out", str(out)])
    assert code == 2
    assert "emr.python_version is 3.9" in " ".join(capsys.readouterr().err.split())
    assert not out.exists()
