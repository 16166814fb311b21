"""Fixtures of the deployment tests: a package (a small one, and the real one built once per
session), and an "AWS account" on the session's local endpoint with an EMR cluster, an EMR
Serverless application, a KMS key and a code bucket, named in the config's ``emr`` section."""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from weir.aws import aws_client
from weir.config import WeirConfig, config_from_mapping
from weir.deploy.package import (
    ENV_ARCHIVE,
    JOBS,
    PACKAGED_CONF,
    Package,
    build_package,
    default_cache_dir,
    find_interpreter,
    packaged_config,
    write_manifest,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/weir-emr-job"
EMR_PYTHON = "3.9"


@pytest.fixture(autouse=True)
def _no_weir_overrides_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("WEIR__"):
            monkeypatch.delenv(name)


def with_emr(config: WeirConfig, **emr: object) -> WeirConfig:
    """``config`` with its ``emr`` section patched, validated like a file would be."""
    document = config.model_dump()
    document["emr"] = {**document["emr"], **emr}
    return config_from_mapping(document, environ={})


def write_conf(config: WeirConfig, path: Path) -> str:
    path.write_text(yaml.safe_dump(config.model_dump()), "utf-8")
    return str(path)


def small_package(root: Path, config: WeirConfig) -> Package:
    """A package of the real layout with a tiny environment archive: what submission tests
    upload (the real environment is ~150 MB)."""
    root.mkdir(parents=True)
    roles = {}
    for relative in JOBS.values():
        target = root / "jobs" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((PROJECT_ROOT / "jobs" / relative).read_bytes())
        roles[f"jobs/{relative}"] = "job"
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        data = b"home = /usr/bin\n"
        info = tarfile.TarInfo("pyvenv.cfg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (root / ENV_ARCHIVE).write_bytes(archive.getvalue())
    roles[ENV_ARCHIVE] = "python-env"
    (root / "weir-0.1.0-py3-none-any.whl").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    roles["weir-0.1.0-py3-none-any.whl"] = "wheel"
    (root / "conf").mkdir()
    (root / PACKAGED_CONF).write_text(packaged_config(config)[0], "utf-8")
    roles[PACKAGED_CONF] = "conf"
    (root / "jars").mkdir()
    (root / "jars" / "spark-sql-kafka-0-10_2.12-3.5.7.jar").write_bytes(b"jar")
    roles["jars/spark-sql-kafka-0-10_2.12-3.5.7.jar"] = "jar"
    write_manifest(root, roles, {"weir_version": "0.1.0"})
    return Package.load(root)


@pytest.fixture(scope="session")
def emr_python() -> str:
    """A Python of EMR 7's line (3.9) on this machine; the package is built with it."""
    python = find_interpreter(EMR_PYTHON)
    if python is None:
        pytest.fail(f"no python{EMR_PYTHON} on PATH or under pyenv: the EMR package needs one")
    return python


@pytest.fixture(scope="session")
def built_package(
    tmp_path_factory: pytest.TempPathFactory, weir_config: WeirConfig, emr_python: str
) -> Package:
    """The real package, built once per session. Its environment links to this machine's
    Python 3.9 (``emr.python_home``) instead of Amazon Linux's /usr, so it runs here. The
    installed environment is cached in the user's cache folder across sessions (and clones)."""
    home = str(Path(emr_python).resolve().parent.parent)
    config = with_emr(weir_config, python_home=home)
    return build_package(
        config,
        tmp_path_factory.mktemp("package") / "emr",
        python=emr_python,
        project_root=PROJECT_ROOT,
        jars_dir=PROJECT_ROOT / ".jars" / "emr",
        cache_dir=default_cache_dir(),
    )


@pytest.fixture
def emr_account(local_infra: WeirConfig) -> Iterator[WeirConfig]:
    """``local_infra`` with the Glue catalog, a fresh code bucket, a KMS key, a waiting EMR
    cluster and a started EMR Serverless application on the local endpoint, named in ``emr``."""
    bucket = f"weir-code-{uuid.uuid4().hex[:8]}"
    aws_client(local_infra, "s3").create_bucket(Bucket=bucket)
    key = aws_client(local_infra, "kms").create_key(Description="weir test")["KeyMetadata"]
    cluster = aws_client(local_infra, "emr").run_job_flow(
        Name="weir-test",
        ReleaseLabel="emr-7.12.0",
        Instances={
            "InstanceCount": 1,
            "KeepJobFlowAliveWhenNoSteps": True,
            "MasterInstanceType": "m5.xlarge",
        },
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )["JobFlowId"]
    application = aws_client(local_infra, "emr-serverless").create_application(
        name="weir-test", releaseLabel="emr-7.12.0", type="SPARK"
    )["applicationId"]
    # EMR's catalog is Glue: the local Derby metastore's Java options do not travel.
    document = local_infra.model_dump()
    document["catalog"]["kind"] = "glue"
    yield with_emr(
        config_from_mapping(document, environ={}),
        cluster_id=cluster,
        application_id=application,
        execution_role_arn=ROLE_ARN,
        code_uri=f"s3://{bucket}/weir/code",
        log_uri=f"s3://{bucket}/weir/logs",
        s3_encryption="SSE-KMS",
        s3_kms_key_id=key["KeyId"],
        delta_lock_table="weir_delta_log",
    )


def objects(config: WeirConfig, uri: str) -> dict[str, dict]:
    """Every object under an s3:// prefix, by key relative to it (HeadObject details)."""
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    s3 = aws_client(config, "s3")
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {
        item["Key"][len(prefix) :].lstrip("/"): s3.head_object(Bucket=bucket, Key=item["Key"])
        for item in listing
    }
