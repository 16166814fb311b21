"""`weir package`: everything a cluster needs to run Weir's jobs, in one folder with a manifest.

The folder (``dist/emr`` by default) holds:

* ``weir-<version>-py3-none-any.whl``: Weir itself;
* ``weir-env.tar.gz``: a packed Python environment for the EMR release's Python line
  (``emr.python_version``, 3.9 on EMR 7.x's Amazon Linux 2023), given to Spark as
  ``spark.archives=…#environment`` so driver and executors run ``./environment/bin/python``.
  It holds Weir and its runtime dependencies, except what the cluster provides (pyspark: the
  release's Spark) and what only the ``weir`` console needs (typer, which needs Python 3.10);
* ``jobs/…``: the spark-submit entry points;
* ``conf/weir.yaml``: the configuration as loaded (``${VAR}`` expanded), credentials removed:
  on EMR the job role's credentials apply;
* ``jars/…``: the JVM jars the release does not ship (Spark's Kafka source and what it needs,
  the MSK IAM login module), from ``jvm/emr-package.pom.xml`` via ``make setup``;
* ``manifest.json``: versions, the Python lock, and the size and SHA-256 of every file.

The environment is packed the way venv-pack does (a venv whose ``bin/python`` links to the
cluster's interpreter under ``emr.python_home``), by this module rather than venv-pack 0.2.0,
whose ``--python-prefix`` writes a broken ``python3.9`` link. The archive is reproducible: the
same inputs give the same bytes. Installing the dependencies is the slow part, so the installed
environment is cached under ``cache_dir``, keyed by the interpreter and the requirement list.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.parser import Parser
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import yaml

from weir.config import ConfigError, WeirConfig
from weir.errors import WeirError

log = logging.getLogger(__name__)

# Job name -> entry point under jobs/ (what `weir emr submit JOB` runs).
JOBS: dict[str, str] = {
    "batch": "batch/rebuild.py",
    "dq": "quality/run_checks.py",
    "maintain": "maintenance/maintain.py",
    "merge": "merge/merge.py",
    "stream": "streaming/stream.py",
}
# Distributions the cluster provides: the release's own pyspark (on the driver's and the
# executors' PYTHONPATH), which must match its JVM side.
PROVIDED_BY_CLUSTER = frozenset({"pyspark"})
# Needed only by the `weir` console script, never by a job; typer >= 0.29 needs Python 3.10.
CONSOLE_ONLY = frozenset({"typer"})
# What the jobs rely on from the EMR release rather than the package (docs/deploy.md).
FROM_RELEASE = {
    "spark": "Apache Spark 3.5 and its pyspark",
    "delta": "delta-spark, delta-storage and delta-storage-s3-dynamodb under "
    "/usr/share/aws/delta/lib (the `delta` classification on EMR on EC2)",
    "s3": "EMRFS for s3://",
    "glue": "the AWS Glue Data Catalog client (Hive metastore factory)",
    "kinesis": "the aws-kinesis Spark connector",
}

ENV_ARCHIVE = "weir-env.tar.gz"
ENV_ALIAS = "environment"
PACKAGED_CONF = "conf/weir.yaml"
MANIFEST = "manifest.json"
DEFAULT_OUT = "dist/emr"
MANIFEST_FORMAT = 1
# One timestamp for every archive entry, so the same inputs give the same archive bytes.
ARCHIVE_MTIME = 315532800  # 1980-01-01, the oldest time a zip (the wheel) can record
_CACHE_FORMAT = "2"
_CREDENTIAL_KEYS = ("aws.access_key_id", "aws.secret_access_key")
_SECRET_OPTION = re.compile(r"password|secret|jaas|token|credential", re.IGNORECASE)
# The installer, used at build time only.
_NOT_PACKED = frozenset({"pip"})
_MANYLINUX = re.compile(r"^manylinux_(\d+)_(\d+)_(\w+)$")
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


@dataclass(frozen=True)
class PackageFile:
    """One file of the package: its path in the package, what it is for, size and checksum."""

    path: str
    role: str  # wheel | python-env | job | conf | jar | lock
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Package:
    """A built package folder and its manifest (what `weir emr submit` uploads)."""

    root: Path
    manifest: dict[str, Any]

    @property
    def files(self) -> list[PackageFile]:
        return [PackageFile(**entry) for entry in self.manifest["files"]]

    @property
    def package_id(self) -> str:
        """``<version>-<digest>``: the upload folder; another build of other bytes gets another."""
        digest = hashlib.sha256(
            "\n".join(f"{f.path} {f.sha256}" for f in self.files).encode()
        ).hexdigest()
        return f"{self.manifest['weir_version']}-{digest[:12]}"

    def paths(self, role: str) -> list[str]:
        return [f.path for f in self.files if f.role == role]

    def job_path(self, job: str) -> str:
        """The packaged entry point of ``job``; ConfigError (exit 2) naming the known jobs."""
        if job not in JOBS:
            raise ConfigError("JOB", f"unknown job {job!r}; choose from {', '.join(JOBS)}")
        path = f"jobs/{JOBS[job]}"
        if path not in self.paths("job"):
            raise WeirError(f"the package in {self.root} has no {path}; run `weir package` again")
        return path

    @classmethod
    def load(cls, root: Path) -> Package:
        """The package in ``root``, every file checked against the manifest (WeirError if not)."""
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise WeirError(f"no package in {root} (no {MANIFEST}); run `weir package` first")
        manifest = json.loads(manifest_path.read_text("utf-8"))
        package = cls(root, manifest)
        for entry in package.files:
            file = root / entry.path
            if not file.is_file() or file_sha256(file) != entry.sha256:
                raise WeirError(
                    f"{file} is missing or differs from {MANIFEST}; run `weir package` again"
                )
        return package


def default_cache_dir() -> Path:
    """Where installed environments are kept between builds: the user's cache folder, so a
    fresh clone (CI's) on the same machine reuses them."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "weir" / "package-environments"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- The interpreter and the requirements ----------------------------------------------------


@dataclass(frozen=True)
class Interpreter:
    """The Python that builds the environment: it must be the cluster's Python line."""

    path: str
    version: str  # 3.9.18
    machine: str  # x86_64

    @property
    def line(self) -> str:
        return ".".join(self.version.split(".")[:2])


def inspect_interpreter(python: str) -> Interpreter:
    probe = (
        "import json, platform, sys; "
        "print(json.dumps([sys.version.split()[0], platform.machine()]))"
    )
    try:
        done = subprocess.run(
            [python, "-c", probe], capture_output=True, text=True, check=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise ConfigError("--python", f"cannot run {python}: {error}") from None
    version, machine = json.loads(done.stdout)
    return Interpreter(python, version, machine)


def check_interpreter(config: WeirConfig, interpreter: Interpreter) -> None:
    """The builder must be the cluster's Python line and CPU: wheels are chosen by both."""
    if interpreter.line != config.emr.python_version:
        raise ConfigError(
            "--python",
            f"{interpreter.path} is Python {interpreter.version}, but emr.python_version is "
            f"{config.emr.python_version}: give a Python {config.emr.python_version} interpreter",
        )
    if interpreter.machine != config.emr.architecture:
        raise ConfigError(
            "--python",
            f"{interpreter.path} runs on {interpreter.machine}, but emr.architecture is "
            f"{config.emr.architecture}: build on a {config.emr.architecture} machine",
        )


def find_interpreter(line: str) -> Optional[str]:
    """A ``python<line>`` that runs: on PATH, else under pyenv's versions folder."""
    candidates = [shutil.which(f"python{line}")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(
        (str(p) for p in pyenv_root.glob(f"versions/{line}.*/bin/python{line}")), reverse=True
    )
    for candidate in candidates:
        if candidate and _runs(candidate):
            return candidate
    return None


def _runs(python: str) -> bool:
    try:
        subprocess.run([python, "-c", "pass"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _without_extras(requirements: Iterable[str]) -> list[str]:
    return [r for r in requirements if "extra ==" not in r.replace('"', " ").replace("'", " ")]


def environment_requirements(wheel: Path) -> tuple[list[str], list[str]]:
    """(requirements installed with their dependencies, requirements installed without).

    Weir's runtime requirements from the wheel, less what the cluster provides and the
    console-only ones. A requirement that itself depends on a provided distribution
    (delta-spark needs pyspark) is installed without dependencies, and its other
    requirements are added to the first list.
    """
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        headers = Parser().parsestr(archive.read(name).decode("utf-8"))
    requirements = _without_extras(headers.get_all("Requires-Dist") or [])
    excluded = PROVIDED_BY_CLUSTER | CONSOLE_ONLY
    with_deps: list[str] = []
    without_deps: list[str] = []
    for requirement in requirements:
        name = _requirement_name(requirement)
        if name in excluded:
            continue
        try:
            own = _without_extras(metadata.requires(name) or [])
        except metadata.PackageNotFoundError:
            own = []
        if any(_requirement_name(r) in PROVIDED_BY_CLUSTER for r in own):
            without_deps.append(requirement)
            with_deps += [r for r in own if _requirement_name(r) not in excluded]
        else:
            with_deps.append(requirement)
    return sorted(set(with_deps)), sorted(set(without_deps))


# --- The installed environment (cached) ------------------------------------------------------


def _pip(python: str, *args: str) -> str:
    command = [python, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise WeirError(f"pip {args[0]} failed:\n{done.stderr.strip()[-3000:]}")
    return done.stdout


def installed_environment(
    interpreter: Interpreter, with_deps: list[str], without_deps: list[str], cache_dir: Path
) -> Path:
    """A venv of ``interpreter`` holding the requirements, built once per distinct input.

    The venv's own pip installs (pip itself is not packed). The folder appears complete or
    not at all (built aside, then renamed).
    """
    key = hashlib.sha256(
        json.dumps(
            [_CACHE_FORMAT, interpreter.version, interpreter.machine, with_deps, without_deps]
        ).encode()
    ).hexdigest()[:16]
    venv = cache_dir / key
    if (venv / "requirements.lock").is_file():
        log.info("package: environment %s from the cache", key)
        return venv
    cache_dir.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=cache_dir))
    try:
        subprocess.run(
            [interpreter.path, "-m", "venv", str(building)], check=True, capture_output=True
        )
        python = str(building / "bin" / "python")
        if without_deps:
            _pip(python, "install", "--quiet", "--no-deps", *without_deps)
        _pip(python, "install", "--quiet", "--only-binary=:all:", *with_deps)
        frozen = _pip(python, "freeze", "--all").splitlines()
        lock = [line for line in frozen if _requirement_name(line) not in _NOT_PACKED]
        (building / "requirements.lock").write_text("\n".join(lock) + "\n", "utf-8")
        building.rename(venv)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    log.info("package: environment %s installed", key)
    return venv


def site_packages(venv: Path) -> Path:
    (found,) = (venv / "lib").glob("python3.*/site-packages")
    return found


def check_wheel_tags(venv: Path, config: WeirConfig) -> None:
    """Every installed binary wheel must run on the cluster: its CPU, glibc no newer than
    ``emr.glibc_version``, no musl. A WeirError names the distribution otherwise."""
    newest = tuple(int(part) for part in config.emr.glibc_version.split("."))
    arch = config.emr.architecture
    for wheel_file in sorted(site_packages(venv).glob("*.dist-info/WHEEL")):
        tags = [
            line.split(":", 1)[1].strip()
            for line in wheel_file.read_text("utf-8").splitlines()
            if line.startswith("Tag:")
        ]
        # A tag may be compressed: manylinux_2_17_x86_64.manylinux2014_x86_64
        platforms = {part for tag in tags for part in tag.split("-")[-1].split(".")}
        if "any" in platforms:
            continue
        fits = []
        for tag in platforms:
            match = _MANYLINUX.match(tag)
            if match:
                glibc, tag_arch = (int(match.group(1)), int(match.group(2))), match.group(3)
            elif tag.rsplit("_", 2)[0] in _LEGACY_MANYLINUX:
                legacy, _, tag_arch = tag.partition("_")
                glibc = _LEGACY_MANYLINUX[legacy]
            else:
                continue
            fits.append(tag_arch == arch and glibc <= newest)
        if not any(fits):
            raise WeirError(
                f"{wheel_file.parent.name} is built for {', '.join(sorted(platforms))}: it "
                f"will not load on the cluster ({arch}, glibc {config.emr.glibc_version})"
            )


# --- The packed archive ----------------------------------------------------------------------


def _entry(name: str, *, size: int = 0, mode: int = 0o644, kind: bytes = tarfile.REGTYPE):
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type = size, mode, kind
    info.mtime, info.uid, info.gid, info.uname, info.gname = ARCHIVE_MTIME, 0, 0, "", ""
    return info


def _venv_files(venv: Path) -> Iterator[tuple[str, Path]]:
    """The venv's files worth shipping, sorted: no bytecode, no bin/ scripts (their shebangs
    name the build machine; the cluster runs bin/python only), no install-location records."""
    for path in sorted(venv.rglob("*")):
        relative = path.relative_to(venv).as_posix()
        if (
            relative.startswith("bin/")
            or relative in ("pyvenv.cfg", "requirements.lock", "lib64")
            or "__pycache__" in path.parts
            or path.suffix == ".pyc"
            or path.name == "direct_url.json"
            or _is_not_packed(path.relative_to(venv).parts)
        ):
            continue
        yield relative, path


def _is_not_packed(parts: tuple[str, ...]) -> bool:
    if len(parts) < 4 or parts[2] != "site-packages":
        return False
    top = parts[3]
    name = top.split("-")[0] if top.endswith(".dist-info") else top
    return name.lower() in _NOT_PACKED


def pack_environment(venv: Path, wheel: Path, config: WeirConfig, version: str, out: Path) -> None:
    """Write the environment and Weir's wheel as one reproducible ``.tar.gz`` at ``out``.

    ``bin/python`` links to ``<emr.python_home>/bin/python<line>``, as venv-pack's
    ``--python-prefix`` intends; ``pyvenv.cfg`` names that home.
    """
    line = config.emr.python_version
    site = site_packages(venv).relative_to(venv).as_posix()
    home = config.emr.python_home.rstrip("/")
    with (
        out.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=4, mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        tar.addfile(_entry("bin", mode=0o755, kind=tarfile.DIRTYPE))
        for name, target in (
            (f"bin/python{line}", f"{home}/bin/python{line}"),
            ("bin/python3", f"python{line}"),
            ("bin/python", f"python{line}"),
        ):
            link = _entry(name, mode=0o777, kind=tarfile.SYMTYPE)
            link.linkname = target
            tar.addfile(link)
        cfg = (
            f"home = {home}/bin\ninclude-system-site-packages = false\nversion = {version}\n"
        ).encode()
        tar.addfile(_entry("pyvenv.cfg", size=len(cfg)), io.BytesIO(cfg))
        for name, path in _venv_files(venv):
            if path.is_symlink():
                link = _entry(name, mode=0o777, kind=tarfile.SYMTYPE)
                link.linkname = os.readlink(path)
                tar.addfile(link)
            elif path.is_dir():
                tar.addfile(_entry(name, mode=0o755, kind=tarfile.DIRTYPE))
            else:
                mode = 0o755 if os.access(path, os.X_OK) else 0o644
                with path.open("rb") as file:
                    tar.addfile(_entry(name, size=path.stat().st_size, mode=mode), file)
        with zipfile.ZipFile(wheel) as archive:
            for member in sorted(archive.namelist()):
                if member.endswith("/") or member.split("/")[0].endswith(".data"):
                    continue
                data = archive.read(member)
                tar.addfile(_entry(f"{site}/{member}", size=len(data)), io.BytesIO(data))


# --- The rest of the package -----------------------------------------------------------------


def build_wheel(project_root: Path, out_dir: Path) -> Path:
    """Weir's wheel, built from ``project_root`` (timestamps fixed: the same source, the same
    bytes)."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(ARCHIVE_MTIME)}
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "--wheel-dir",
            scratch,
            str(project_root),
        ]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise WeirError(f"building Weir's wheel failed:\n{done.stderr.strip()[-3000:]}")
        (wheel,) = Path(scratch).glob("weir-*.whl")
        target = out_dir / wheel.name
        shutil.copyfile(wheel, target)
    return target


def packaged_config(config: WeirConfig) -> tuple[str, list[str]]:
    """The configuration as YAML for the cluster, and the keys whose values were removed.

    Static AWS keys are dropped (the job role's credentials apply on EMR); a Kafka client
    option that looks like a secret is refused: it belongs in a secret store, not a package.
    """
    document = config.model_dump(mode="json")
    removed = []
    for dotted in _CREDENTIAL_KEYS:
        section, key = dotted.split(".")
        if document[section].get(key) is not None:
            document[section][key] = None
            removed.append(dotted)
    for option in config.sources.kafka.security.options:
        if _SECRET_OPTION.search(option):
            raise ConfigError(
                f"sources.kafka.security.options.{option}",
                "looks like a credential, which is never packaged; on MSK use IAM "
                "(security.sasl_mechanism: AWS_MSK_IAM)",
            )
    header = (
        "# Packaged by `weir package` from the configuration as loaded (${VAR} expanded).\n"
        "# Credentials are never packaged: the job role's apply on EMR.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False), removed


def secrets_of(config: WeirConfig) -> list[str]:
    """Credential values in ``config`` that must appear in no packaged file."""
    values = [config.aws.access_key_id, config.aws.secret_access_key]
    return [v for v in values if v and len(v) >= 4]


def build_package(
    config: WeirConfig,
    out_dir: Path,
    *,
    python: str,
    project_root: Path,
    jars_dir: Path,
    cache_dir: Path,
) -> Package:
    """Build the package into ``out_dir`` (replaced whole) and return it, manifest checked.

    Raises ConfigError (exit 2, nothing written) for a wrong interpreter or a credential in a
    Kafka option, WeirError for a failed build or a wheel the cluster cannot load.
    """
    interpreter = inspect_interpreter(python)
    check_interpreter(config, interpreter)
    conf_text, removed = packaged_config(config)
    jars = sorted(jars_dir.glob("*.jar")) if (jars_dir / ".resolved").exists() else []
    if not jars:
        raise ConfigError("--jars-dir", f"no resolved jars in {jars_dir}; run `make setup`")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".package-", dir=out_dir.parent))
    try:
        wheel = build_wheel(project_root, staging)
        with_deps, without_deps = environment_requirements(wheel)
        venv = installed_environment(interpreter, with_deps, without_deps, cache_dir)
        check_wheel_tags(venv, config)
        pack_environment(venv, wheel, config, interpreter.version, staging / ENV_ARCHIVE)
        lock = (venv / "requirements.lock").read_text("utf-8")
        (staging / "requirements.lock").write_text(lock, "utf-8")
        roles = {wheel.name: "wheel", ENV_ARCHIVE: "python-env", "requirements.lock": "lock"}
        for relative in JOBS.values():
            target = staging / "jobs" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(project_root / "jobs" / relative, target)
            roles[f"jobs/{relative}"] = "job"
        (staging / PACKAGED_CONF).parent.mkdir(parents=True)
        (staging / PACKAGED_CONF).write_text(conf_text, "utf-8")
        roles[PACKAGED_CONF] = "conf"
        (staging / "jars").mkdir()
        for jar in jars:
            shutil.copyfile(jar, staging / "jars" / jar.name)
            roles[f"jars/{jar.name}"] = "jar"

        write_manifest(
            staging,
            roles,
            {
                "weir_version": metadata.version("weir"),
                "target": {
                    "release_label": config.emr.release_label,
                    "python": config.emr.python_version,
                    "python_home": config.emr.python_home,
                    "architecture": config.emr.architecture,
                    "glibc": config.emr.glibc_version,
                },
                "built_with": {
                    "python": interpreter.version,
                    "pyspark": metadata.version("pyspark"),
                },
                "python_packages": dict(
                    line.split("==", 1) for line in lock.splitlines() if "==" in line
                ),
                "provided_by_cluster": sorted(PROVIDED_BY_CLUSTER),
                "left_out": {
                    name: "the weir console only; the jobs do not use it" for name in CONSOLE_ONLY
                },
                "from_release": FROM_RELEASE,
                "credentials_removed": removed,
            },
        )
        _refuse_secrets(staging, secrets_of(config))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Package.load(out_dir)


def write_manifest(folder: Path, roles: dict[str, str], details: dict[str, Any]) -> None:
    """``manifest.json`` in ``folder``: ``details`` and every file of ``roles`` (path -> role)
    with its size and SHA-256."""
    files = [
        PackageFile(path, role, (folder / path).stat().st_size, file_sha256(folder / path))
        for path, role in sorted(roles.items())
    ]
    manifest = {"format": MANIFEST_FORMAT, **details, "files": [f.__dict__ for f in files]}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")


def _refuse_secrets(folder: Path, secrets: list[str]) -> None:
    """A guard against a bug: no credential value in any text file of the package."""
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".json", ".py", ".lock", ".md"):
            text = path.read_text("utf-8", errors="replace")
            if any(secret in text for secret in secrets):
                raise WeirError(f"refusing to package {path.name}: it holds a credential")


__all__ = [
    "ENV_ALIAS",
    "ENV_ARCHIVE",
    "JOBS",
    "MANIFEST",
    "PACKAGED_CONF",
    "Package",
    "PackageFile",
    "build_package",
    "check_wheel_tags",
    "default_cache_dir",
    "environment_requirements",
    "find_interpreter",
    "packaged_config",
    "write_manifest",
]
