"""jvm/unpack_trino.py keeps lib/ and the named plugins, following hard links into other plugins.

A small tarball shaped like Trino's: a plugin whose jars are hard links into lib/ and into
another plugin's folder (which comes first in the archive, as in the real one).
"""

from __future__ import annotations

import importlib.util
import io
import tarfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def load_unpacker():
    spec = importlib.util.spec_from_file_location(
        "unpack_trino", PROJECT_ROOT / "jvm" / "unpack_trino.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trino_like_tarball(path: Path) -> Path:
    top = "trino-server-1"
    with tarfile.open(path, "w:gz") as archive:

        def add_file(name: str, data: bytes) -> None:
            member = tarfile.TarInfo(f"{top}/{name}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))

        def add_link(name: str, target: str) -> None:
            member = tarfile.TarInfo(f"{top}/{name}")
            member.type = tarfile.LNKTYPE
            member.linkname = f"{top}/{target}"
            archive.addfile(member)

        add_file("lib/core.jar", b"core")
        add_file("plugin/bigquery/okio.jar", b"okio")
        add_file("plugin/bigquery/bq.jar", b"bigquery")
        add_link("plugin/delta-lake/core.jar", "lib/core.jar")
        add_link("plugin/delta-lake/okio.jar", "plugin/bigquery/okio.jar")
        add_file("plugin/delta-lake/delta.jar", b"delta")
        add_file("plugin/hive/hive.jar", b"hive")
        add_file("bin/launcher", b"#!/bin/sh")
    return path


def test_the_kept_plugin_has_every_jar_and_no_other_plugin_remains(tmp_path: Path) -> None:
    unpacker = load_unpacker()
    tarball = trino_like_tarball(tmp_path / "trino.tar.gz")

    unpacker.unpack(tarball, tmp_path / "home", ["delta-lake"])

    home = tmp_path / "home"
    assert sorted(p.name for p in (home / "plugin").iterdir()) == ["delta-lake"]
    delta = home / "plugin" / "delta-lake"
    assert {p.name: p.read_bytes() for p in delta.iterdir()} == {
        "core.jar": b"core",
        "okio.jar": b"okio",
        "delta.jar": b"delta",
    }
    assert (home / "lib" / "core.jar").read_bytes() == b"core"
    assert not (home / "bin").exists()


def test_a_plugin_the_tarball_lacks_is_an_error(tmp_path: Path) -> None:
    unpacker = load_unpacker()
    tarball = trino_like_tarball(tmp_path / "trino.tar.gz")

    with pytest.raises(SystemExit, match="no plugin folder for iceberg"):
        unpacker.unpack(tarball, tmp_path / "home", ["iceberg"])
