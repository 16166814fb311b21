"""`weir emr submit`: upload the package and run one job as an EMR step or an EMR Serverless run.

Three targets run the same spark-submit program with the same settings:

* ``cluster``: an EMR on EC2 step, ``command-runner.jar spark-submit --deploy-mode cluster …``;
* ``serverless``: an EMR Serverless job run whose ``sparkSubmitParameters`` carry the settings;
* ``local``: the command line run on this machine (tests; docs/deploy.md), with the package
  read from its folder instead of S3; the caller unpacks ``environment/`` and puts
  ``weir.yaml`` in the working folder, which YARN and EMR Serverless do from ``spark.archives``
  and ``spark.files``.

Every Spark setting starts from :func:`weir.spark.spark_settings` (the one place sessions get
theirs); this module adds only what a submission needs on top: the packed environment, the
packaged conf and jars, the release's Delta jars, the Glue Data Catalog as metastore, Delta's
DynamoDB LogStore and the S3 encryption settings. Static credentials never go into a
submission: on EMR the job role's apply.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlparse

from weir.config import ConfigError, WeirConfig
from weir.deploy.package import ENV_ALIAS, ENV_ARCHIVE, MANIFEST, PACKAGED_CONF, Package
from weir.errors import WeirError
from weir.spark import spark_settings

log = logging.getLogger(__name__)

TARGET_CLUSTER = "cluster"
TARGET_SERVERLESS = "serverless"
TARGET_LOCAL = "local"
TARGETS = (TARGET_CLUSTER, TARGET_SERVERLESS, TARGET_LOCAL)

# The packaged conf as the driver finds it: spark.files lands in its working folder.
CONF_NAME = PACKAGED_CONF.rsplit("/", 1)[-1]
ENV_PYTHON = f"./{ENV_ALIAS}/bin/python"
RELEASE_DELTA_JARS = (
    "/usr/share/aws/delta/lib/delta-spark.jar",
    "/usr/share/aws/delta/lib/delta-storage.jar",
)
RELEASE_DELTA_DYNAMODB_JAR = "/usr/share/aws/delta/lib/delta-storage-s3-dynamodb.jar"
STREAMING_JOBS = frozenset({"stream"})
# EMR Serverless restarts a failed streaming run; more failures than this an hour stop it.
STREAM_RETRIES_PER_HOUR = 5
# Settings that would put a credential into a step's arguments or a job run's parameters.
_CREDENTIAL_SETTINGS = (
    "spark.hadoop.fs.s3a.access.key",
    "spark.hadoop.fs.s3a.secret.key",
    "spark.hadoop.fs.s3a.session.token",
    "spark.hadoop.fs.s3a.aws.credentials.provider",
)


def code_root(config: WeirConfig, package: Package) -> str:
    """Where the package goes on S3: ``<emr.code_uri>/<package id>`` (a new folder per build)."""
    if not config.emr.code_uri:
        raise ConfigError("emr.code_uri", "required to upload the package (s3://bucket/prefix)")
    return f"{config.emr.code_uri}/{package.package_id}"


def submission_settings(
    config: WeirConfig, package: Package, root: str, target: str
) -> dict[str, str]:
    """Every Spark setting of a submission: the session's own plus the deployment's (pure)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}")
    settings = {
        key: value
        for key, value in spark_settings(config).items()
        if key not in _CREDENTIAL_SETTINGS
    }
    if target != TARGET_LOCAL:
        # Locally the caller unpacks both into the working folder, as YARN would.
        settings["spark.archives"] = f"{root}/{ENV_ARCHIVE}#{ENV_ALIAS}"
        settings["spark.files"] = f"{root}/{PACKAGED_CONF}"
    if target == TARGET_SERVERLESS:
        settings["spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON"] = ENV_PYTHON
        settings["spark.emr-serverless.driverEnv.PYSPARK_PYTHON"] = ENV_PYTHON
        settings["spark.executorEnv.PYSPARK_PYTHON"] = ENV_PYTHON
    elif target == TARGET_CLUSTER:
        settings["spark.yarn.appMasterEnv.PYSPARK_PYTHON"] = ENV_PYTHON
        settings["spark.executorEnv.PYSPARK_PYTHON"] = ENV_PYTHON
    else:
        settings["spark.pyspark.driver.python"] = ENV_PYTHON
        settings["spark.pyspark.python"] = ENV_PYTHON
    if target != TARGET_LOCAL:
        # Locally spark.jars_dir already holds Delta and the Kafka source.
        jars = [f"{root}/{path}" for path in package.paths("jar")]
        if target == TARGET_SERVERLESS:
            jars = [*RELEASE_DELTA_JARS, *jars]
        if config.emr.delta_lock_table:
            jars.append(RELEASE_DELTA_DYNAMODB_JAR)
        settings["spark.jars"] = ",".join(jars)
    return settings


def put_object_encryption(config: WeirConfig) -> dict[str, str]:
    """The S3 PutObject arguments of ``emr.s3_encryption`` (the package upload)."""
    if config.emr.s3_encryption == "SSE-KMS":
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": str(config.emr.s3_kms_key_id)}
    if config.emr.s3_encryption == "SSE-S3":
        return {"ServerSideEncryption": "AES256"}
    return {}


def spark_submit_command(
    config: WeirConfig,
    package: Package,
    job: str,
    job_args: list[str],
    *,
    root: str,
    target: str,
) -> list[str]:
    """The spark-submit command line of ``job`` (what an EMR step runs through command-runner)."""
    entry_point = f"{root}/{package.job_path(job)}"
    command = ["spark-submit"]
    if target == TARGET_CLUSTER:
        command += ["--deploy-mode", "cluster"]
    for key, value in sorted(submission_settings(config, package, root, target).items()):
        command += ["--conf", f"{key}={value}"]
    return [*command, entry_point, "--conf", CONF_NAME, *job_args]


def emr_step(
    config: WeirConfig,
    package: Package,
    job: str,
    job_args: list[str],
    root: str,
    action_on_failure: str = "CONTINUE",
) -> dict[str, Any]:
    """The EMR step that runs ``job``: ``command-runner.jar`` with its spark-submit command."""
    return {
        "Name": f"weir {job} {package.package_id}",
        "ActionOnFailure": action_on_failure,
        "HadoopJarStep": {
            "Jar": "command-runner.jar",
            "Args": spark_submit_command(
                config, package, job, job_args, root=root, target=TARGET_CLUSTER
            ),
        },
    }


def step_request(
    config: WeirConfig,
    package: Package,
    job: str,
    job_args: list[str],
    root: str,
    action_on_failure: str = "CONTINUE",
) -> dict[str, Any]:
    """The ``AddJobFlowSteps`` request that runs ``job`` on ``emr.cluster_id``."""
    return {
        "JobFlowId": required(config.emr.cluster_id, "emr.cluster_id", "an EMR step"),
        "Steps": [emr_step(config, package, job, job_args, root, action_on_failure)],
    }


def job_run_request(
    config: WeirConfig, package: Package, job: str, job_args: list[str], root: str
) -> dict[str, Any]:
    """The ``StartJobRun`` request that runs ``job`` on ``emr.application_id``.

    ``sparkSubmitParameters`` is one string of ``--conf key=value`` words: a value with
    whitespace could not be told apart, so it is refused (ConfigError naming the setting).
    """
    settings = submission_settings(config, package, root, TARGET_SERVERLESS)
    for key, value in settings.items():
        if any(ch.isspace() for ch in value):
            raise ConfigError(
                key,
                f"{value!r} holds whitespace, which EMR Serverless's sparkSubmitParameters "
                "cannot carry; set it without spaces (spark.settings) or use an EMR cluster",
            )
    request: dict[str, Any] = {
        "applicationId": required(config.emr.application_id, "emr.application_id", "--serverless"),
        "executionRoleArn": required(
            config.emr.execution_role_arn, "emr.execution_role_arn", "--serverless"
        ),
        "name": f"weir-{job}-{package.package_id}",
        "mode": "STREAMING" if job in STREAMING_JOBS else "BATCH",
        "jobDriver": {
            "sparkSubmit": {
                "entryPoint": f"{root}/{package.job_path(job)}",
                "entryPointArguments": ["--conf", CONF_NAME, *job_args],
                "sparkSubmitParameters": " ".join(
                    f"--conf {key}={value}" for key, value in sorted(settings.items())
                ),
            }
        },
        "tags": {"weir:job": job, "weir:package": package.package_id},
    }
    if job in STREAMING_JOBS:
        request["retryPolicy"] = {"maxFailedAttemptsPerHour": STREAM_RETRIES_PER_HOUR}
    if config.emr.log_uri:
        request["configurationOverrides"] = {
            "monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": config.emr.log_uri}}
        }
    return request


def required(value: Optional[str], key: str, purpose: str) -> str:
    if not value:
        raise ConfigError(key, f"required for {purpose}; set it in the conf or the environment")
    return value


# --- Talking to AWS -------------------------------------------------------------------------------


def check_target(config: WeirConfig, serverless: bool) -> None:
    """The configured cluster or application exists and takes work; WeirError (exit 1) if not.

    Runs before anything is uploaded.
    """
    from botocore.exceptions import ClientError

    from weir.aws import aws_client

    region = config.aws.region
    if serverless:
        application = required(config.emr.application_id, "emr.application_id", "--serverless")
        required(config.emr.execution_role_arn, "emr.execution_role_arn", "--serverless")
        client = aws_client(config, "emr-serverless")
        try:
            state = client.get_application(applicationId=application)["application"]["state"]
        except ClientError as error:
            raise WeirError(
                f"no EMR Serverless application {application} in {region} (emr.application_id): "
                f"{error.response['Error'].get('Message', error)}"
            ) from None
        if state in ("TERMINATED", "STOPPING"):
            raise WeirError(f"EMR Serverless application {application} is {state}")
        return
    cluster = required(config.emr.cluster_id, "emr.cluster_id", "an EMR step")
    client = aws_client(config, "emr")
    try:
        status = client.describe_cluster(ClusterId=cluster)["Cluster"]["Status"]
    except ClientError as error:
        raise WeirError(
            f"no EMR cluster {cluster} in {region} (emr.cluster_id): "
            f"{error.response['Error'].get('Message', error)}"
        ) from None
    if status["State"].startswith("TERMINAT"):
        raise WeirError(f"EMR cluster {cluster} is {status['State']}; start one and set its id")


def upload_package(config: WeirConfig, package: Package) -> str:
    """Upload the package under :func:`code_root` (encrypted as ``emr.s3_encryption`` says);
    the S3 prefix. Idempotent: a complete upload of the same package is left as it is (the
    manifest goes last, so its presence marks a complete upload)."""
    from botocore.exceptions import ClientError

    from weir.aws import aws_client

    root = code_root(config, package)
    parsed = urlparse(root)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    s3 = aws_client(config, "s3")
    manifest_bytes = (package.root / MANIFEST).read_bytes()
    try:
        present = s3.get_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST}")["Body"].read()
    except ClientError:
        present = None
    if present == manifest_bytes:
        log.info("emr: package %s already at %s", package.package_id, root)
        return root
    extra = put_object_encryption(config)
    for entry in package.files:
        s3.upload_file(
            str(package.root / entry.path), bucket, f"{prefix}/{entry.path}", ExtraArgs=extra
        )
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST}", Body=manifest_bytes, **extra)
    log.info("emr: package %s uploaded to %s", package.package_id, root)
    return root


@dataclass(frozen=True)
class Submitted:
    """What was submitted: the run's id (a step id or a job run id) and where."""

    run_id: str
    target: str
    code_root: str
    request: dict[str, Any]


def submit(
    config: WeirConfig, package: Package, job: str, job_args: list[str], serverless: bool
) -> Submitted:
    """Check the target, upload the package, add the step or start the job run.

    Errors in the configuration or the job name (ConfigError) and a missing cluster or
    application (WeirError) are found before anything is uploaded.
    """
    from weir.aws import aws_client

    package.job_path(job)
    root = code_root(config, package)
    request = (
        job_run_request(config, package, job, job_args, root)
        if serverless
        else step_request(config, package, job, job_args, root)
    )
    check_target(config, serverless)
    upload_package(config, package)
    if serverless:
        run_id = aws_client(config, "emr-serverless").start_job_run(**request)["jobRunId"]
    else:
        (run_id,) = aws_client(config, "emr").add_job_flow_steps(**request)["StepIds"]
    target = TARGET_SERVERLESS if serverless else TARGET_CLUSTER
    log.info("emr: %s %s submitted as %s", job, package.package_id, run_id)
    return Submitted(run_id, target, root, json.loads(json.dumps(request)))


__all__ = [
    "CONF_NAME",
    "TARGETS",
    "TARGET_CLUSTER",
    "TARGET_LOCAL",
    "TARGET_SERVERLESS",
    "Submitted",
    "check_target",
    "code_root",
    "emr_step",
    "job_run_request",
    "put_object_encryption",
    "spark_submit_command",
    "step_request",
    "submission_settings",
    "submit",
    "upload_package",
]
