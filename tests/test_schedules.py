"""The schedules shipped (docs/operations.md) run what `weir package` builds: the Airflow DAGs,
the EMR steps and the cron lines all start the requests `weir emr submit` sends.

The DAG tests run Airflow from its own virtual environment (``.venv-airflow``, installed by
``make airflow``, which ``make test`` depends on): Airflow never enters the main environment.
``tests/airflow_probe.py`` loads ``dags/`` there and runs every Weir task's real ``execute``
against a stubbed EMR Serverless client, reporting what it sent.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from deploy.conftest import ROLE_ARN, small_package

from weir.cli import main
from weir.config import WeirConfig, load_config
from weir.deploy.package import JOBS, Package
from weir.deploy.resources import deploy_files
from weir.deploy.schedule import (
    FRESHNESS,
    HOURLY,
    HOURLY_CRON,
    JOB_RUNS_FILE,
    UPLOADED_JOB_RUNS,
    WEEKLY,
    WEEKLY_CRON,
    dag_jobs,
    schedules_folder_files,
)
from weir.deploy.submit import code_root, job_run_request, step_request
from weir.errors import EXIT_BAD_CONFIG, EXIT_OK
from weir.quality import GATED_SUITES, SUITES

PROJECT_ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_PYTHON = PROJECT_ROOT / ".venv-airflow" / "bin" / "python"
PROBE = Path(__file__).with_name("airflow_probe.py")
EMR_CONF = str(PROJECT_ROOT / "conf" / "emr.yaml")
APPLICATION = "00fabcdefgh12345"
CLUSTER = "j-2AXXXXXXGAPLF"
# conf/emr.yaml's variables, as a deployment sets them (docs/deploy.md, step 1).
ENVIRON = {
    "AWS_REGION": "eu-west-1",
    "WEIR_BUCKET": "acme-telemetry",
    "WEIR_EMR_APPLICATION_ID": APPLICATION,
    "WEIR_EMR_ROLE_ARN": ROLE_ARN,
    "WEIR_EMR_CLUSTER_ID": CLUSTER,
}
BATCH_RUN_CHECKS = ["--suite", "raw", "--suite", "quarantine", "--suite", "batch"]
BATCH_RUN_CHECKS += ["--suite", "batch_run", "--suite", "agreement"]
# What each DAG task runs, written out by hand: the specification the generated files meet.
SCHEDULED: dict[str, tuple[str, list[str]]] = {
    "batch_rebuild": ("batch", []),
    "dq_batch_run": ("dq", BATCH_RUN_CHECKS),
    "merge": ("merge", []),
    "dq_unified": ("dq", ["--suite", "speed", "--suite", "unified"]),
    "maintain": ("maintain", []),
    "stream": ("stream", ["--source", "kinesis"]),
}
HOURLY_STEPS = [
    ("batch_rebuild", "CANCEL_AND_WAIT"),
    ("dq_batch_run", "CONTINUE"),
    ("merge", "CONTINUE"),
    ("dq_unified", "CONTINUE"),
]


def schedule(package: Package, *options: str) -> int:
    """`weir emr schedule --conf conf/emr.yaml --package <package> [options]`, in-process."""
    return main(["emr", "schedule", "--conf", EMR_CONF, "--package", str(package.root), *options])


def _deployment_environment(monkeypatch: pytest.MonkeyPatch, **changes: str) -> None:
    for name in list(os.environ):
        if name.startswith(("WEIR", "AWS_")):
            monkeypatch.delenv(name)
    for name, value in {**ENVIRON, **changes}.items():
        monkeypatch.setenv(name, value)


@dataclass(frozen=True)
class Scheduled:
    """A package and what `weir emr schedule` wrote for it."""

    config: WeirConfig
    package: Package
    root: str
    folder: Path

    def file(self, name: str) -> Any:
        return json.loads((self.folder / name).read_text("utf-8"))


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scheduled]:
    """`weir emr schedule --stream-source kinesis` of a package of the real layout."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _deployment_environment(monkeypatch)
        config = load_config(EMR_CONF)
        package = small_package(tmp_path_factory.mktemp("schedule") / "emr", config)
        code = schedule(package, "--stream-source", "kinesis")
        assert code == EXIT_OK
        yield Scheduled(config, package, code_root(config, package), package.root / "schedule")


@pytest.fixture(scope="module")
def airflow(scheduled: Scheduled, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The probe's report: the DAGs as Airflow loaded them, and what their tasks sent."""
    if not AIRFLOW_PYTHON.exists():
        pytest.fail("no .venv-airflow: run `make airflow` (make test does)")
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AIRFLOW", "AWS_", "WEIR"))
    }
    environment |= {
        "AIRFLOW_HOME": str(tmp_path_factory.mktemp("airflow-home")),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    done = subprocess.run(
        [
            str(AIRFLOW_PYTHON),
            str(PROBE),
            str(PROJECT_ROOT / "dags"),
            str(scheduled.folder / JOB_RUNS_FILE),
        ],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "behaviour_error" not in report, report["behaviour_error"]
    return report


def graph(airflow: dict, dag_id: str) -> dict[str, list[str]]:
    return {name: t["upstream"] for name, t in airflow["dags"][dag_id]["tasks"].items()}


# --- The DAGs as Airflow loads them ----------------------------------------------------------


def test_dags_load_in_airflow_without_import_errors_or_the_variable(airflow: dict) -> None:
    # the probe parses dags/ with no weir_job_runs Variable and no AWS credentials
    assert airflow["errors"] == {}
    assert set(airflow["dags"]) == {"weir_hourly", "weir_maintenance", "weir_stream"}


def test_hourly_dag_checks_the_batch_run_before_the_merge_and_what_it_published_after(
    airflow: dict,
) -> None:
    assert graph(airflow, "weir_hourly") == {
        "batch_rebuild": [],
        "dq_batch_run": ["batch_rebuild"],
        "merge": ["dq_batch_run"],
        "dq_unified": ["merge"],
        "stream_running": [],
    }
    tasks = airflow["dags"]["weir_hourly"]["tasks"]
    assert tasks["merge"]["trigger_rule"] == "all_done"  # the gate decides, not the checks
    assert (tasks["dq_batch_run"]["retries"], tasks["dq_unified"]["retries"]) == (0, 0)


def test_maintenance_dag_is_one_maintenance_job(airflow: dict) -> None:
    assert graph(airflow, "weir_maintenance") == {"maintain": []}


def test_stream_dag_starts_the_stream_only_after_checking_none_is_active(airflow: dict) -> None:
    assert graph(airflow, "weir_stream") == {"no_stream_active": [], "stream": ["no_stream_active"]}
    assert airflow["dags"]["weir_stream"]["schedule"] == "None"  # triggered by hand


def test_dags_run_the_schedule_modules_jobs_at_its_times(airflow: dict) -> None:
    dags = airflow["dags"]
    assert dags["weir_hourly"]["schedule"] == HOURLY_CRON
    assert dags["weir_maintenance"]["schedule"] == WEEKLY_CRON
    job_runs = {
        name
        for dag in dags.values()
        for name, task in dag["tasks"].items()
        if task["kind"] == "WeirJobRun"
    }
    assert job_runs == {job.task_id for job in dag_jobs()} == set(SCHEDULED)
    chain = [job.task_id for job in HOURLY]
    assert [graph(airflow, "weir_hourly")[name] for name in chain[1:]] == [
        [name] for name in chain[:-1]
    ]
    assert [job.task_id for job in WEEKLY] == ["maintain"]


# --- What the DAG tasks submit ---------------------------------------------------------------


def assert_same_request(sent: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    """Field by field (and the job driver's fields one by one); the operator adds only its
    idempotency token."""
    assert set(sent) == set(expected) | {"clientToken"}, where
    for key, value in expected.items():
        if key == "jobDriver":
            for field, setting in value["sparkSubmit"].items():
                assert sent[key]["sparkSubmit"][field] == setting, (where, field)
        assert sent[key] == value, (where, key)


def test_every_dag_task_submits_exactly_what_weir_emr_submit_sends(
    airflow: dict, scheduled: Scheduled
) -> None:
    submitted = airflow["behaviour"]["submitted"]
    assert set(submitted) == set(SCHEDULED)
    for task_id, (job, job_args) in SCHEDULED.items():
        outcome = submitted[task_id]
        assert "error" not in outcome, (task_id, outcome.get("error"))
        expected = job_run_request(
            scheduled.config, scheduled.package, job, job_args, scheduled.root
        )
        assert_same_request(outcome["request"], expected, task_id)
    stream = submitted["stream"]["request"]
    assert (stream["mode"], stream["retryPolicy"]) == ("STREAMING", {"maxFailedAttemptsPerHour": 5})
    assert stream["applicationId"] == APPLICATION


def test_dag_reads_the_job_runs_from_s3_when_the_variable_names_a_uri(
    airflow: dict, scheduled: Scheduled
) -> None:
    from_s3 = airflow["behaviour"]["from_s3"]
    assert from_s3["reads"] == [{"bucket": "acme-code", "key": "weir/code/schedule/job-runs.json"}]
    expected = job_run_request(scheduled.config, scheduled.package, "merge", [], scheduled.root)
    assert_same_request(from_s3["outcome"]["request"], expected, "merge from s3")


def test_a_task_without_the_variable_fails_naming_it_and_submits_nothing(airflow: dict) -> None:
    outcome = airflow["behaviour"]["without_variable"]
    assert outcome["request"] == {}
    assert "weir_job_runs is not set" in outcome["error"]


def test_a_failed_job_run_fails_its_task(airflow: dict) -> None:
    # EMR Serverless marks a run FAILED when spark-submit exits non-zero (3: failed checks)
    assert "Serverless Job failed" in airflow["behaviour"]["failed_run"]["error"]


def test_a_stopped_application_is_started_before_the_job_run(
    airflow: dict, scheduled: Scheduled
) -> None:
    # the template's application stops itself when idle: most hours begin with it stopped
    outcome = airflow["behaviour"]["stopped_application"]
    assert outcome["operations"] == [
        "GetApplication",
        "StartApplication",
        "GetApplication",
        "StartJobRun",
        "GetJobRun",
    ]
    expected = job_run_request(scheduled.config, scheduled.package, "batch", [], scheduled.root)
    assert_same_request(outcome["request"], expected, "batch_rebuild after a start")


def test_the_submit_policy_allows_every_call_the_dags_make(airflow: dict) -> None:
    behaviour = airflow["behaviour"]
    outcomes = [
        *behaviour["submitted"].values(),
        behaviour["stopped_application"],
        *behaviour["stream_checks"].values(),
    ]
    called = {f"emr-serverless:{op}" for outcome in outcomes for op in outcome["operations"]}
    # the S3 form reads an SSE-KMS object; every job run passes the job role
    called |= {"s3:GetObject", "kms:Decrypt", "iam:PassRole"}
    policy = json.loads(deploy_files()["iam/weir-submit-policy.json"])
    allowed = {action for statement in policy["Statement"] for action in statement["Action"]}
    assert "emr-serverless:ListJobRuns" in called
    assert called <= allowed, called - allowed


def test_tasks_follow_their_job_runs_as_long_as_weir_emr_submit_waits(airflow: dict) -> None:
    wait = airflow["behaviour"]["wait"]
    six_hours = 6 * 3600  # `weir emr submit --wait`'s default --timeout
    assert {name: w["seconds"] for name, w in wait.items()} == dict.fromkeys(SCHEDULED, six_hours)
    assert [name for name, w in wait.items() if not w["wait_for_completion"]] == ["stream"]


def test_stream_monitor_finds_a_weir_stream_on_any_page_of_running_job_runs(
    airflow: dict, scheduled: Scheduled
) -> None:
    checks = airflow["behaviour"]["stream_checks"]
    found = checks["running_on_second_page"]
    assert found["returned"] == "weir-stream-0.1.0-abc"
    assert [ask.get("nextToken") for ask in found["asked"]] == [None, "page-1"]
    assert {ask["applicationId"] for ask in found["asked"]} == {APPLICATION}
    assert "no weir-stream-… job run is RUNNING" in checks["none_running"]["error"]
    # the monitor matches the names `weir emr submit stream` gives its runs
    stream = job_run_request(
        scheduled.config, scheduled.package, "stream", ["--source", "kinesis"], scheduled.root
    )
    assert stream["name"].startswith(airflow["behaviour"]["stream_run_prefix"])


def test_stream_start_is_refused_while_a_stream_is_active(airflow: dict) -> None:
    checks = airflow["behaviour"]["stream_checks"]
    assert "is PENDING" in checks["one_pending"]["error"]
    assert {"PENDING", "RUNNING", "SUBMITTED"} <= set(checks["one_pending"]["asked"][0]["states"])
    assert "error" not in checks["none_active"]


# --- The EMR steps and the package -----------------------------------------------------------


def aws_cli_step(step: dict[str, Any]) -> dict[str, Any]:
    """The step ``aws emr add-steps --steps file://…`` sends for a custom-jar entry (awscli's
    emr customization: Name, ActionOnFailure, and Jar and Args as the HadoopJarStep)."""
    assert step["Type"] == "CUSTOM_JAR"
    return {
        "Name": step["Name"],
        "ActionOnFailure": step["ActionOnFailure"],
        "HadoopJarStep": {"Jar": step["Jar"], "Args": step["Args"]},
    }


def test_emr_steps_are_the_steps_weir_emr_submit_adds(scheduled: Scheduled) -> None:
    files = {
        "emr-steps.json": HOURLY_STEPS,
        "emr-steps-maintenance.json": [("maintain", "CONTINUE")],
    }
    for name, steps in files.items():
        written = scheduled.file(name)
        assert len(written) == len(steps), name
        for step, (task_id, action) in zip(written, steps):
            job, job_args = SCHEDULED[task_id]
            (expected,) = step_request(
                scheduled.config, scheduled.package, job, job_args, scheduled.root, action
            )["Steps"]
            sent = aws_cli_step(step)
            for key, value in expected.items():
                assert sent[key] == value, (name, task_id, key)
            assert set(sent) == set(expected)


def _paths_in(words: list[str], root: str) -> set[str]:
    """Every package path under ``root`` that the words of a request name."""
    found = set()
    for word in words:
        for part in re.split(r"[=,\s]", word):
            if part.startswith(f"{root}/"):
                found.add(part[len(root) + 1 :].split("#", 1)[0])
    return found


def test_every_file_a_scheduled_request_names_is_in_the_package(scheduled: Scheduled) -> None:
    shipped = {entry.path for entry in scheduled.package.files}
    document = scheduled.file(JOB_RUNS_FILE)
    assert document["code_root"] == scheduled.root
    for task_id, request in document["job_runs"].items():
        driver = request["jobDriver"]["sparkSubmit"]
        named = _paths_in([driver["entryPoint"], driver["sparkSubmitParameters"]], scheduled.root)
        assert f"jobs/{JOBS[SCHEDULED[task_id][0]]}" in named, task_id
        assert {"weir-env.tar.gz", "conf/weir.yaml"} <= named, task_id
        assert named <= shipped, (task_id, named - shipped)
    for step in scheduled.file("emr-steps.json"):
        named = _paths_in(step["Args"], scheduled.root)
        assert {"weir-env.tar.gz", "conf/weir.yaml"} <= named
        assert named <= shipped, named - shipped


# --- `weir emr schedule` ---------------------------------------------------------------------


def test_schedule_without_an_application_writes_the_steps_and_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _deployment_environment(monkeypatch, WEIR_EMR_APPLICATION_ID="")
    package = small_package(tmp_path / "emr", load_config(EMR_CONF))

    code = schedule(package)

    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert sorted(p.name for p in (package.root / "schedule").iterdir()) == [
        "emr-steps-maintenance.json",
        "emr-steps.json",
    ]
    assert f"skipped {JOB_RUNS_FILE}" in out and "emr.application_id" in out


def test_schedule_refuses_an_unknown_stream_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _deployment_environment(monkeypatch)
    package = small_package(tmp_path / "emr", load_config(EMR_CONF))
    code = schedule(package, "--stream-source", "mqtt")
    assert code == EXIT_BAD_CONFIG
    assert not (package.root / "schedule").exists()


@pytest.fixture
def aws_account(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An in-process fake AWS (moto) with the deployment's bucket and KMS key."""
    import boto3
    from moto import mock_aws

    _deployment_environment(monkeypatch)
    with mock_aws():
        kms = boto3.client("kms", region_name=ENVIRON["AWS_REGION"])
        key = kms.create_key(Description="weir test")["KeyMetadata"]["Arn"]
        monkeypatch.setenv("WEIR_KMS_KEY_ID", key)
        s3 = boto3.client("s3", region_name=ENVIRON["AWS_REGION"])
        s3.create_bucket(
            Bucket=ENVIRON["WEIR_BUCKET"],
            CreateBucketConfiguration={"LocationConstraint": ENVIRON["AWS_REGION"]},
        )
        yield s3


def bucket_keys(s3: Any) -> list[str]:
    listing = s3.list_objects_v2(Bucket=ENVIRON["WEIR_BUCKET"]).get("Contents", [])
    return sorted(item["Key"] for item in listing)


def test_schedule_upload_puts_the_package_then_its_job_runs_encrypted(
    tmp_path: Path, aws_account: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(EMR_CONF)
    package = small_package(tmp_path / "emr", config)

    code = schedule(package, "--upload")

    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    prefix = "weir/code"
    root = f"{prefix}/{package.package_id}"
    assert bucket_keys(aws_account) == sorted(
        [f"{root}/{entry.path}" for entry in package.files]
        + [f"{root}/manifest.json", f"{prefix}/{UPLOADED_JOB_RUNS}"]
    )
    uri = f"s3://{ENVIRON['WEIR_BUCKET']}/{prefix}/{UPLOADED_JOB_RUNS}"
    assert f"weir_job_runs = {uri}" in out
    uploaded = aws_account.get_object(Bucket=ENVIRON["WEIR_BUCKET"], Key=uri.split("/", 3)[3])
    assert uploaded["ServerSideEncryption"] == "aws:kms"
    assert uploaded["SSEKMSKeyId"] == config.emr.s3_kms_key_id
    local = (package.root / "schedule" / JOB_RUNS_FILE).read_bytes()
    assert uploaded["Body"].read() == local
    assert json.loads(local)["code_root"] == f"s3://{ENVIRON['WEIR_BUCKET']}/{root}"


def test_schedule_upload_without_an_application_uploads_nothing(
    tmp_path: Path, aws_account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEIR_EMR_APPLICATION_ID", "")
    package = small_package(tmp_path / "emr", load_config(EMR_CONF))

    code = schedule(package, "--upload")

    assert code == EXIT_BAD_CONFIG
    assert bucket_keys(aws_account) == []


# --- cron -----------------------------------------------------------------------------------


def test_schedules_folder_is_what_the_schedule_module_generates() -> None:
    folder = PROJECT_ROOT / "schedules"
    on_disk = {path.name: path.read_text("utf-8") for path in folder.iterdir()}
    assert on_disk == schedules_folder_files(), "run `python -m weir.deploy.schedule schedules`"


def cron_commands(text: str) -> list[tuple[str, list[list[str]]]]:
    """(schedule, the commands its line runs in order) of every cron line."""
    lines = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#") or "=" in line.split()[0]:
            continue
        fields = line.split()
        script = shlex.split(line.split(" bash -c ", 1)[1])[0]
        commands = [shlex.split(command) for command in script.split("; ")]
        lines.append((" ".join(fields[:5]), commands))
    return lines


def with_help(command: list[str]) -> list[str]:
    """The command's `weir` arguments with --help before the job's own (after ``--``)."""
    words = command[1:]
    cut = words.index("--") if "--" in words else len(words)
    return [*words[:cut], "--help"]


@pytest.mark.parametrize("name", ["weir.crontab", "weir-emr.crontab"])
def test_cron_lines_run_weir_commands_that_parse_in_pipeline_order(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = cron_commands((PROJECT_ROOT / "schedules" / name).read_text("utf-8"))
    schedules = [schedule for schedule, _ in lines]
    assert schedules[:2] == [HOURLY_CRON, WEEKLY_CRON]
    for schedule, commands in lines:
        assert all(re.fullmatch(r"[\d*/,-]+", field) for field in schedule.split()), schedule
        for command in commands:
            assert command[0] == ".venv/bin/weir", command
            assert main(with_help(command)) == EXIT_OK, command
    capsys.readouterr()
    hourly = lines[0][1]
    jobs = [command[3] if command[1] == "emr" else command[1] for command in hourly]
    assert jobs == ["batch", "dq", "merge", "dq"]
    suites = [
        [w for i, w in enumerate(command) if command[i - 1] == "--suite"] for command in hourly
    ]
    assert suites == [[], list(GATED_SUITES), [], ["speed", "unified"]]


def test_the_hour_checks_every_suite_once_the_gated_ones_before_the_merge() -> None:
    checked = [job.args[1::2] for job in HOURLY if job.job == "dq"]
    assert checked[0] == GATED_SUITES
    assert sorted(checked[0] + checked[1]) == sorted(SUITES)
    assert set(FRESHNESS.args[1::2]) <= set(SUITES)
