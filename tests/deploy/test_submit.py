"""`weir emr submit` and `weir emr status`: the requests, argument by argument, and against the
local AWS endpoint (moto: its EMR and EMR Serverless accept requests but run nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from weir.aws import aws_client
from weir.cli import main
from weir.config import ConfigError, WeirConfig, load_config
from weir.deploy.package import Package
from weir.deploy.status import RunStatus, wait_for_run
from weir.deploy.submit import (
    job_run_request,
    put_object_encryption,
    spark_submit_command,
    step_request,
    submission_settings,
)
from weir.errors import EXIT_BAD_CONFIG, EXIT_OK, EXIT_RUNTIME_FAILURE, WeirError
from weir.spark import s3_encryption_settings, spark_settings

from .conftest import PROJECT_ROOT, ROLE_ARN, objects, small_package, with_emr, write_conf

CLUSTER = "j-2AXXXXXXGAPLF"
APPLICATION = "00fabcdefgh12345"
ENV_PYTHON = "./environment/bin/python"
GLUE_FACTORY = "com.amazonaws.glue.catalog.metastore.AWSGlueDataCatalogHiveClientFactory"
LOG_STORE = "io.delta.storage.S3DynamoDBLogStore"
DELTA_LIB = "/usr/share/aws/delta/lib"
KAFKA_JAR = "jars/spark-sql-kafka-0-10_2.12-3.5.7.jar"


@pytest.fixture
def emr_config() -> WeirConfig:
    """conf/emr.yaml as a deployment fills it from the environment."""
    environ = {
        "WEIR_BUCKET": "acme",
        "WEIR_EMR_CLUSTER_ID": CLUSTER,
        "WEIR_EMR_APPLICATION_ID": APPLICATION,
        "WEIR_EMR_ROLE_ARN": ROLE_ARN,
    }
    return load_config(str(PROJECT_ROOT / "conf" / "emr.yaml"), environ=environ)


@pytest.fixture
def package(tmp_path: Path, emr_config: WeirConfig) -> Package:
    return small_package(tmp_path / "package", emr_config)


def deployment_settings(root: str) -> dict[str, str]:
    """What conf/emr.yaml's deployment adds to the session's settings, written out by hand."""
    return {
        "spark.archives": f"{root}/weir-env.tar.gz#environment",
        "spark.files": f"{root}/conf/weir.yaml",
        "spark.sql.catalogImplementation": "hive",
        "spark.hadoop.hive.metastore.client.factory.class": GLUE_FACTORY,
        "spark.delta.logStore.s3.impl": LOG_STORE,
        "spark.delta.logStore.s3a.impl": LOG_STORE,
        "spark.io.delta.storage.S3DynamoDBLogStore.ddb.tableName": "weir_delta_log",
        "spark.io.delta.storage.S3DynamoDBLogStore.ddb.region": "us-east-1",
        "spark.hadoop.fs.s3.enableServerSideEncryption": "true",
        "spark.hadoop.fs.s3.serverSideEncryption.kms.keyId": "alias/weir",
        "spark.hadoop.fs.s3a.encryption.algorithm": "SSE-KMS",
        "spark.hadoop.fs.s3a.encryption.key": "alias/weir",
    }


def conf_pairs(words: list[str]) -> dict[str, str]:
    """``--conf key=value`` words as a dict; each key must come once."""
    assert len(words) % 2 == 0 and set(words[::2]) == {"--conf"}, words
    pairs = [word.split("=", 1) for word in words[1::2]]
    assert len({key for key, _ in pairs}) == len(pairs), "a setting given twice"
    return dict(pairs)


def test_step_runs_spark_submit_in_cluster_mode_with_every_setting(
    emr_config: WeirConfig, package: Package
) -> None:
    root = f"s3://acme/weir/code/{package.package_id}"

    request = step_request(emr_config, package, "batch", ["--cutoff", "2026-03-01T10:00:00Z"], root)

    assert request["JobFlowId"] == CLUSTER
    (step,) = request["Steps"]
    assert step["Name"] == f"weir batch {package.package_id}"
    assert step["ActionOnFailure"] == "CONTINUE"
    assert step["HadoopJarStep"]["Jar"] == "command-runner.jar"
    args = step["HadoopJarStep"]["Args"]
    assert args[:3] == ["spark-submit", "--deploy-mode", "cluster"]
    assert args[-5:] == [
        f"{root}/jobs/batch/rebuild.py",
        "--conf",
        "weir.yaml",
        "--cutoff",
        "2026-03-01T10:00:00Z",
    ]
    expected = {
        **spark_settings(emr_config),
        **deployment_settings(root),
        "spark.yarn.appMasterEnv.PYSPARK_PYTHON": ENV_PYTHON,
        "spark.executorEnv.PYSPARK_PYTHON": ENV_PYTHON,
        # the release's Delta is on the classpath through the delta classification
        "spark.jars": f"{root}/{KAFKA_JAR},{DELTA_LIB}/delta-storage-s3-dynamodb.jar",
    }
    settings = conf_pairs(args[3:-5])
    for key, value in expected.items():
        assert settings.get(key) == value, key
    assert set(settings) == set(expected)


def test_job_run_carries_the_settings_in_spark_submit_parameters(
    emr_config: WeirConfig, package: Package
) -> None:
    root = f"s3://acme/weir/code/{package.package_id}"

    request = job_run_request(emr_config, package, "merge", [], root)

    assert request["applicationId"] == APPLICATION
    assert request["executionRoleArn"] == ROLE_ARN
    assert request["name"] == f"weir-merge-{package.package_id}"
    assert request["mode"] == "BATCH"
    assert "retryPolicy" not in request
    assert request["tags"] == {"weir:job": "merge", "weir:package": package.package_id}
    assert request["configurationOverrides"] == {
        "monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": "s3://acme/weir/logs"}}
    }
    driver = request["jobDriver"]["sparkSubmit"]
    assert driver["entryPoint"] == f"{root}/jobs/merge/merge.py"
    assert driver["entryPointArguments"] == ["--conf", "weir.yaml"]
    expected = {
        **spark_settings(emr_config),
        **deployment_settings(root),
        "spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON": ENV_PYTHON,
        "spark.emr-serverless.driverEnv.PYSPARK_PYTHON": ENV_PYTHON,
        "spark.executorEnv.PYSPARK_PYTHON": ENV_PYTHON,
        # EMR Serverless has no delta classification: the release's jars by path
        "spark.jars": ",".join(
            [
                f"{DELTA_LIB}/delta-spark.jar",
                f"{DELTA_LIB}/delta-storage.jar",
                f"{root}/{KAFKA_JAR}",
                f"{DELTA_LIB}/delta-storage-s3-dynamodb.jar",
            ]
        ),
    }
    settings = conf_pairs(driver["sparkSubmitParameters"].split(" "))
    for key, value in expected.items():
        assert settings.get(key) == value, key
    assert set(settings) == set(expected)


def test_stream_runs_as_a_streaming_job_run_that_is_retried(
    emr_config: WeirConfig, package: Package
) -> None:
    request = job_run_request(emr_config, package, "stream", ["--source", "kafka"], "s3://a/b")
    assert request["mode"] == "STREAMING"
    assert request["retryPolicy"] == {"maxFailedAttemptsPerHour": 5}
    assert request["jobDriver"]["sparkSubmit"]["entryPointArguments"] == [
        "--conf",
        "weir.yaml",
        "--source",
        "kafka",
    ]


def test_a_setting_with_whitespace_is_refused_for_serverless(
    emr_config: WeirConfig, package: Package
) -> None:
    spark = emr_config.spark.model_copy(
        update={"settings": {"spark.executor.extraJavaOptions": "-Da=1 -Db=2"}}
    )
    config = emr_config.model_copy(update={"spark": spark})
    with pytest.raises(ConfigError) as refused:
        job_run_request(config, package, "batch", [], "s3://a/b")
    assert refused.value.key == "spark.executor.extraJavaOptions"


def test_no_credential_reaches_a_submission(weir_config: WeirConfig, tmp_path: Path) -> None:
    config = with_emr(weir_config, code_uri="s3://acme/code", cluster_id=CLUSTER)
    assert config.aws.secret_access_key  # the local profile has static keys
    assert "spark.hadoop.fs.s3a.secret.key" in spark_settings(config)
    package = small_package(tmp_path / "package", config)

    for target in ("cluster", "serverless", "local"):
        settings = submission_settings(config, package, "s3://acme/code/x", target)
        assert not {k for k in settings if k.startswith("spark.hadoop.fs.s3a.") and "key" in k}
    words = spark_submit_command(config, package, "merge", [], root="/pkg", target="local")
    assert not [w for w in words if config.aws.secret_access_key in w.split("=", 1)[-1]]


def test_unknown_job_names_the_known_ones(emr_config: WeirConfig, package: Package) -> None:
    known = "choose from batch, dq, maintain, merge, stream"
    with pytest.raises(ConfigError, match=known) as refused:
        step_request(emr_config, package, "compact", [], "s3://a/b")
    assert refused.value.key == "JOB"


def test_jobs_folder_holds_exactly_the_submittable_jobs() -> None:
    from weir.deploy.package import JOBS

    found = {
        p.relative_to(PROJECT_ROOT / "jobs").as_posix() for p in PROJECT_ROOT.glob("jobs/**/*.py")
    }
    assert found == set(JOBS.values())


# --- wait -----------------------------------------------------------------------------------


def looks(*states: str) -> list[RunStatus]:
    final = {"SUCCESS", "FAILED"}
    return [RunStatus("r1", "job run", s, "", s in final, s == "SUCCESS") for s in states]


def test_wait_reports_each_change_of_state_until_the_run_finishes() -> None:
    answers = iter(looks("SUBMITTED", "RUNNING", "RUNNING", "SUCCESS"))
    seen: list[str] = []
    naps: list[float] = []

    final = wait_for_run(
        lambda: next(answers),
        timeout_seconds=60,
        poll_seconds=7,
        report=lambda status: seen.append(status.state),
        sleep=naps.append,
        clock=lambda: 0.0,
    )

    assert (final.state, final.succeeded) == ("SUCCESS", True)
    assert seen == ["SUBMITTED", "RUNNING", "SUCCESS"]
    assert naps == [7, 7, 7]


def test_wait_gives_up_at_the_timeout_naming_the_run() -> None:
    now = iter([0.0, 5.0, 11.0])
    with pytest.raises(WeirError, match="job run r1 still RUNNING after 10 s"):
        wait_for_run(
            lambda: looks("RUNNING")[0],
            timeout_seconds=10,
            sleep=lambda _: None,
            clock=lambda: next(now),
        )


# --- against the local AWS endpoint -----------------------------------------------------------


def code_objects(config: WeirConfig) -> dict[str, dict]:
    return objects(config, str(config.emr.code_uri))


@pytest.mark.slow
def test_submit_uploads_the_package_encrypted_and_adds_the_step(
    emr_account: WeirConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = small_package(tmp_path / "package", emr_account)
    conf = write_conf(emr_account, tmp_path / "weir.yaml")
    arguments = ["--", "--cutoff", "2026-03-01T10:00:00Z", "--full"]

    code = main(
        ["emr", "submit", "batch", "--conf", conf, "--package", str(package.root), *arguments]
    )

    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    step_id = out.split()[0]
    root = f"{emr_account.emr.code_uri}/{package.package_id}"
    step = aws_client(emr_account, "emr").describe_step(
        ClusterId=emr_account.emr.cluster_id, StepId=step_id
    )["Step"]
    assert step["Name"] == f"weir batch {package.package_id}"
    assert step["Config"]["Args"] == spark_submit_command(
        emr_account,
        package,
        "batch",
        ["--cutoff", "2026-03-01T10:00:00Z", "--full"],
        root=root,
        target="cluster",
    )
    uploaded = code_objects(emr_account)
    assert set(uploaded) == {f"{package.package_id}/{f.path}" for f in package.files} | {
        f"{package.package_id}/manifest.json"
    }
    for key, head in uploaded.items():
        assert head["ServerSideEncryption"] == "aws:kms", key
        assert head["SSEKMSKeyId"].endswith(str(emr_account.emr.s3_kms_key_id)), key
    archive = uploaded[f"{package.package_id}/weir-env.tar.gz"]
    assert archive["ContentLength"] == (package.root / "weir-env.tar.gz").stat().st_size

    # A second submission of the same package uploads nothing again.
    before = {key: head["LastModified"] for key, head in uploaded.items()}
    assert main(["emr", "submit", "merge", "--conf", conf, "--package", str(package.root)]) == 0
    assert {k: h["LastModified"] for k, h in code_objects(emr_account).items()} == before

    capsys.readouterr()
    assert main(["emr", "status", step_id, "--conf", conf]) == EXIT_OK
    assert capsys.readouterr().out.strip() == f"step {step_id}: RUNNING"


@pytest.mark.slow
def test_serverless_submit_starts_the_job_run_and_waits_for_it(
    emr_account: WeirConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = small_package(tmp_path / "package", emr_account)
    conf = write_conf(emr_account, tmp_path / "weir.yaml")

    code = main(
        [
            "emr",
            "submit",
            "merge",
            "--serverless",
            "--wait",
            "--poll",
            "0.1",
            "--conf",
            conf,
            "--package",
            str(package.root),
        ]
    )

    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert code == EXIT_OK, captured.err
    run_id = out[0]
    assert out[-1] == f"job run {run_id}: SUCCESS"
    run = aws_client(emr_account, "emr-serverless").get_job_run(
        applicationId=emr_account.emr.application_id, jobRunId=run_id
    )["jobRun"]
    root = f"{emr_account.emr.code_uri}/{package.package_id}"
    expected = job_run_request(emr_account, package, "merge", [], root)
    assert run["executionRole"] == ROLE_ARN
    assert run["name"] == expected["name"]
    assert run["jobDriver"] == expected["jobDriver"]
    assert run["configurationOverrides"] == expected["configurationOverrides"]
    assert run["tags"] == expected["tags"]
    assert f"{package.package_id}/weir-env.tar.gz" in code_objects(emr_account)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("emr", "arguments", "exit_code", "message"),
    [
        ({}, ["compact"], EXIT_BAD_CONFIG, "unknown job 'compact'"),
        ({"cluster_id": None}, ["batch"], EXIT_BAD_CONFIG, "emr.cluster_id: required"),
        ({"cluster_id": "j-NOSUCHCLUSTER1"}, ["batch"], EXIT_RUNTIME_FAILURE, "no EMR cluster"),
        (
            {"application_id": "00nosuchapp00000"},
            ["batch", "--serverless"],
            EXIT_RUNTIME_FAILURE,
            "no EMR Serverless application 00nosuchapp00000",
        ),
        (
            {"execution_role_arn": None},
            ["batch", "--serverless"],
            EXIT_BAD_CONFIG,
            "emr.execution_role_arn: required",
        ),
        (
            {"execution_role_arn": "weir-emr-job"},
            ["batch", "--serverless"],
            EXIT_BAD_CONFIG,
            "emr.execution_role_arn: 'weir-emr-job' is not an IAM role ARN",
        ),
        ({"code_uri": None}, ["batch"], EXIT_BAD_CONFIG, "emr.code_uri: required"),
    ],
    ids=[
        "unknown job",
        "no cluster",
        "missing cluster",
        "missing application",
        "no role",
        "role not an ARN",
        "no code uri",
    ],
)
def test_bad_submission_fails_clearly_with_nothing_uploaded(
    emr_account: WeirConfig,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    emr: dict,
    arguments: list[str],
    exit_code: int,
    message: str,
) -> None:
    package = small_package(tmp_path / "package", emr_account)
    conf = tmp_path / "weir.yaml"
    document = emr_account.model_dump()
    document["emr"].update(emr)
    conf.write_text(__import__("yaml").safe_dump(document), "utf-8")

    code = main(["emr", "submit", *arguments, "--conf", str(conf), "--package", str(package.root)])

    err = capsys.readouterr().err
    assert code == exit_code, err
    assert message in " ".join(err.split()), err
    assert "Traceback" not in err
    assert code_objects(emr_account) == {}


@pytest.mark.slow
def test_submit_without_a_package_says_to_build_one(
    emr_account: WeirConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = write_conf(emr_account, tmp_path / "weir.yaml")
    code = main(["emr", "submit", "batch", "--conf", conf, "--package", str(tmp_path / "none")])
    assert code == EXIT_RUNTIME_FAILURE
    assert "run `weir package` first" in " ".join(capsys.readouterr().err.split())
    assert code_objects(emr_account) == {}


@pytest.mark.slow
def test_status_of_an_unknown_run_fails(
    emr_account: WeirConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = write_conf(emr_account, tmp_path / "weir.yaml")
    assert main(["emr", "status", "00nosuchrun00000", "--conf", conf]) == EXIT_RUNTIME_FAILURE
    assert "no run 00nosuchrun00000" in capsys.readouterr().err


def test_sse_s3_is_named_as_s3a_and_emrfs_name_it(emr_config: WeirConfig) -> None:
    config = with_emr(emr_config, s3_encryption="SSE-S3", s3_kms_key_id=None)
    assert s3_encryption_settings(config) == {
        "spark.hadoop.fs.s3.enableServerSideEncryption": "true",
        "spark.hadoop.fs.s3a.encryption.algorithm": "AES256",
    }
    assert put_object_encryption(config) == {"ServerSideEncryption": "AES256"}
    assert (
        s3_encryption_settings(with_emr(emr_config, s3_encryption=None, s3_kms_key_id=None)) == {}
    )
