"""Unpack the parts of the Trino server tarball Weir runs: lib/ and the plugins it names.

    python jvm/unpack_trino.py TARBALL DEST --plugin delta-lake

The tarball's plugin folders share jars through hard links: a file in plugin/delta-lake may be
a link to the same jar in lib/ or in another plugin's folder (whichever came first when the
tarball was built). So the first pass reads the member list and adds every kept link's
target, transitively; the second extracts exactly that set in archive order (a link's target
precedes it). Folders of plugins that were extracted only as link targets are then removed:
Trino loads every folder under plugin/, and a partial one would fail its start-up, while the
kept plugin's links still hold the data. The top-level ``trino-server-<version>/`` folder is
dropped: DEST is the server's home.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
from pathlib import Path, PurePosixPath


def _relative(name: str) -> PurePosixPath:
    """A member's path without the top-level ``trino-server-<version>/`` folder."""
    return PurePosixPath(*PurePosixPath(name).parts[1:])


def wanted_members(tarball: Path, plugins: list[str]) -> set[str]:
    """Names of the members to extract: lib/, the plugins, and every link target they need."""
    links: dict[str, str] = {}
    names: list[str] = []
    with tarfile.open(tarball, "r|gz") as archive:
        for member in archive:
            names.append(member.name)
            if member.islnk():
                links[member.name] = member.linkname
    roots = [PurePosixPath("lib"), *(PurePosixPath("plugin") / p for p in plugins)]
    wanted = {n for n in names if any(_relative(n).is_relative_to(r) for r in roots)}
    present = {_relative(n).parts[:2] for n in names}
    missing = [p for p in plugins if ("plugin", p) not in present]
    if missing:
        raise SystemExit(f"{tarball}: no plugin folder for {', '.join(missing)}")
    pending = [n for n in wanted if n in links]
    while pending:
        target = links[pending.pop()]
        if target not in wanted:
            wanted.add(target)
            if target in links:
                pending.append(target)
    return wanted


def unpack(tarball: Path, dest: Path, plugins: list[str]) -> None:
    wanted = wanted_members(tarball, plugins)
    dest.mkdir(parents=True, exist_ok=True)
    extract_options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(tarball, "r|gz") as archive:
        for member in archive:
            if member.name not in wanted or member.isdir():
                continue
            relative = _relative(member.name)
            if member.islnk():
                member.linkname = str(_relative(member.linkname))
            member.name = str(relative)
            archive.extract(member, dest, **extract_options)
    for folder in (dest / "plugin").iterdir():
        if folder.name not in plugins:
            shutil.rmtree(folder)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tarball", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--plugin", action="append", required=True, dest="plugins")
    args = parser.parse_args(argv)
    unpack(args.tarball, args.dest, args.plugins)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
