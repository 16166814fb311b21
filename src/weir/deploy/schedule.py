"""The scheduled jobs, defined once, and what each scheduler runs (docs/operations.md).

One table says which job runs when, with which arguments: :data:`HOURLY` (batch rebuild, the
checks of that batch run, the merge, the checks of what it published), :data:`WEEKLY`
(maintenance), :data:`FRESHNESS` (cron only) and the stream (:func:`stream_job`). Everything
a scheduler runs is derived from it:

* :func:`job_runs_document`: the EMR Serverless ``StartJobRun`` request of every task of
  ``dags/weir_pipeline.py``, each exactly :func:`weir.deploy.submit.job_run_request`, what
  `weir emr submit JOB --serverless` sends. `weir emr schedule` writes them beside the package
  they name; the DAG reads them when a task runs (the Airflow Variable ``weir_job_runs``
  holds the document, or the ``s3://`` URI `weir emr schedule --upload` put it at);
* :func:`emr_steps`: the steps of EMR on EC2 in the form ``aws emr add-steps --steps
  file://…`` reads, each the step of :func:`weir.deploy.submit.step_request`;
* :func:`crontab`: the cron lines of one box, running the local `weir` commands or
  submitting the packaged jobs with `weir emr submit --wait`; committed under ``schedules/``
  (`python -m weir.deploy.schedule schedules`), and a test fails when they are stale.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weir.config import WeirConfig
from weir.deploy.package import Package
from weir.deploy.submit import (
    emr_step,
    job_run_request,
    put_object_encryption,
    required,
    upload_package,
)
from weir.quality import GATED_SUITES, SUITES

log = logging.getLogger(__name__)

# The checks the merge's gate reads (the data the batch run read and wrote), then the checks of
# what the merge published and of the speed layer: every suite, once an hour.
BATCH_RUN_SUITES: tuple[str, ...] = GATED_SUITES
PUBLISHED_SUITES: tuple[str, ...] = tuple(s for s in SUITES if s not in GATED_SUITES)
FRESHNESS_SUITES: tuple[str, ...] = ("unified",)

HOURLY_CRON = "5 * * * *"
WEEKLY_CRON = "30 3 * * 0"
FRESHNESS_CRON = "*/15 * * * *"
DEFAULT_STREAM_SOURCE = "kafka"

# The definitions document `weir emr schedule` writes and the DAG reads.
JOB_RUNS_FILE = "job-runs.json"
JOB_RUNS_FORMAT = 1
HOURLY_STEPS_FILE = "emr-steps.json"
WEEKLY_STEPS_FILE = "emr-steps-maintenance.json"
SCHEDULE_FOLDER = "schedule"
# Where --upload puts the document: one stable key, so the Airflow Variable is set once and a
# new package is scheduled by running `weir emr schedule --upload` again.
UPLOADED_JOB_RUNS = f"{SCHEDULE_FOLDER}/{JOB_RUNS_FILE}"
# The `aws emr add-steps` form of a custom-jar step (awscli's emr customization).
CLI_STEP_TYPE = "CUSTOM_JAR"


def _suites(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(word for name in names for word in ("--suite", name))


@dataclass(frozen=True)
class ScheduledJob:
    """One scheduled run of a packaged job: a DAG task, an EMR step, a cron command."""

    task_id: str  # the DAG's task id and the key of the definitions document
    job: str  # a name of weir.deploy.package.JOBS (`weir emr submit JOB`)
    args: tuple[str, ...] = ()
    # A failed batch rebuild cancels the hour's other steps; the merge runs after failed
    # checks, because its gate is what decides whether the batch run is published.
    action_on_failure: str = "CONTINUE"


HOURLY: tuple[ScheduledJob, ...] = (
    ScheduledJob("batch_rebuild", "batch", action_on_failure="CANCEL_AND_WAIT"),
    ScheduledJob("dq_batch_run", "dq", _suites(BATCH_RUN_SUITES)),
    ScheduledJob("merge", "merge"),
    ScheduledJob("dq_unified", "dq", _suites(PUBLISHED_SUITES)),
)
WEEKLY: tuple[ScheduledJob, ...] = (ScheduledJob("maintain", "maintain"),)
FRESHNESS = ScheduledJob("dq_freshness", "dq", _suites(FRESHNESS_SUITES))


def stream_job(source: str = DEFAULT_STREAM_SOURCE) -> ScheduledJob:
    """The long-running stream of one source (started once, then only monitored)."""
    return ScheduledJob("stream", "stream", ("--source", source))


def dag_jobs(stream_source: str = DEFAULT_STREAM_SOURCE) -> tuple[ScheduledJob, ...]:
    """Every job run the DAGs of ``dags/weir_pipeline.py`` start, one per task id."""
    return (*HOURLY, *WEEKLY, stream_job(stream_source))


# --- EMR Serverless (Airflow) and EMR on EC2 ----------------------------------------------------


def job_runs_document(
    config: WeirConfig, package: Package, root: str, stream_source: str = DEFAULT_STREAM_SOURCE
) -> dict[str, Any]:
    """The definitions document of the DAGs: every task's ``StartJobRun`` request (pure).

    ConfigError (exit 2) naming ``emr.application_id`` or ``emr.execution_role_arn`` when
    they are not configured.
    """
    return {
        "format": JOB_RUNS_FORMAT,
        "package_id": package.package_id,
        "code_root": root,
        "job_runs": {
            job.task_id: job_run_request(config, package, job.job, list(job.args), root)
            for job in dag_jobs(stream_source)
        },
    }


def cli_step(step: dict[str, Any]) -> dict[str, Any]:
    """An ``AddJobFlowSteps`` step in the form ``aws emr add-steps --steps file://…`` reads
    (the CLI builds the step back from ``Jar``, ``Args``, ``Name`` and ``ActionOnFailure``)."""
    return {
        "Type": CLI_STEP_TYPE,
        "Name": step["Name"],
        "ActionOnFailure": step["ActionOnFailure"],
        "Jar": step["HadoopJarStep"]["Jar"],
        "Args": step["HadoopJarStep"]["Args"],
    }


def emr_steps(
    config: WeirConfig, package: Package, root: str, jobs: tuple[ScheduledJob, ...]
) -> list[dict[str, Any]]:
    """The steps of ``jobs`` for ``aws emr add-steps``, in order (pure)."""
    return [
        cli_step(emr_step(config, package, job.job, list(job.args), root, job.action_on_failure))
        for job in jobs
    ]


def _json(document: Any) -> str:
    return json.dumps(document, indent=2) + "\n"


def schedule_files(
    config: WeirConfig,
    package: Package,
    root: str,
    stream_source: str = DEFAULT_STREAM_SOURCE,
    *,
    job_runs: bool = True,
) -> dict[str, str]:
    """The files of one package's schedule, by name: the EMR steps, and (``job_runs``) the
    DAGs' job runs, ConfigError naming the key when the application or role is not
    configured."""
    files = {
        HOURLY_STEPS_FILE: _json(emr_steps(config, package, root, HOURLY)),
        WEEKLY_STEPS_FILE: _json(emr_steps(config, package, root, WEEKLY)),
    }
    if job_runs:
        files[JOB_RUNS_FILE] = _json(job_runs_document(config, package, root, stream_source))
    return files


def upload_schedule(config: WeirConfig, package: Package, job_runs_text: str) -> str:
    """Upload the package (as `weir emr submit` does: once, encrypted) and then the DAGs' job
    runs to ``<emr.code_uri>/schedule/job-runs.json``, so the document never names a package
    that is not there; the document's ``s3://`` URI."""
    from weir.aws import aws_client

    upload_package(config, package)
    uri = f"{required(config.emr.code_uri, 'emr.code_uri', 'the upload')}/{UPLOADED_JOB_RUNS}"
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    aws_client(config, "s3").put_object(
        Bucket=bucket,
        Key=key,
        Body=job_runs_text.encode("utf-8"),
        ContentType="application/json",
        **put_object_encryption(config),
    )
    log.info("schedule: job runs of %s at %s", package.package_id, uri)
    return uri


# --- cron -----------------------------------------------------------------------------------------

# The local `weir` command of each packaged job (docs/operations.md).
LOCAL_COMMANDS: dict[str, tuple[str, ...]] = {
    "batch": ("batch", "rebuild"),
    "dq": ("dq", "run"),
    "maintain": ("maintain",),
    "merge": ("merge",),
    "stream": ("stream",),
}
CHECKOUT = "/opt/weir"
LOCAL_CONF = "conf/local.yaml"
EMR_CONF = "conf/emr.yaml"
_WEIR = ".venv/bin/weir"


def local_command(job: ScheduledJob, conf: str = LOCAL_CONF) -> list[str]:
    """The `weir` command line that runs ``job`` on this machine."""
    return [_WEIR, *LOCAL_COMMANDS[job.job], "--conf", conf, *job.args]


def submit_command(job: ScheduledJob, conf: str = EMR_CONF) -> list[str]:
    """The `weir emr submit` command line that runs ``job`` as an EMR Serverless job run and
    waits for it (exit 0 when the run succeeded, 1 otherwise)."""
    command = [_WEIR, "emr", "submit", job.job, "--serverless", "--wait", "--conf", conf]
    return [*command, "--", *job.args] if job.args else command


def _line(schedule: str, lock: str, log: str, commands: list[list[str]]) -> str:
    script = "; ".join(shlex.join(command) for command in commands)
    return (
        f"{schedule} cd {CHECKOUT} && mkdir -p .weir && flock -n .weir/{lock}.lock"
        f" bash -c {shlex.quote(script)} >> .weir/{log}.log 2>&1"
    )


_CRON_HEADER = """\
# Generated from src/weir/deploy/schedule.py (python -m weir.deploy.schedule schedules): edit
# that module, not this file. docs/operations.md explains it. Install with
# `crontab {name}` after replacing {checkout} with the checkout. Times are UTC.
# flock -n skips a run while the previous one still holds the lock; output goes to .weir/*.log
# and cron mails what fails.
CRON_TZ=UTC
SHELL=/bin/bash
"""


def crontab(packaged: bool) -> str:
    """The cron lines of the hourly, weekly and freshness schedules.

    ``packaged``: each job is the package's, run on EMR Serverless through
    `weir emr submit --serverless --wait` (the same requests as the DAG's); otherwise the
    local `weir` commands of a box running the local stack.
    """
    name = "schedules/weir-emr.crontab" if packaged else "schedules/weir.crontab"
    command = submit_command if packaged else local_command
    text = _CRON_HEADER.format(name=name, checkout=CHECKOUT)
    if packaged:
        text += (
            "# Submits from this checkout: `weir package` has built dist/emr, and the variables\n"
            "# conf/emr.yaml reads (docs/deploy.md, step 1) are set above the lines, e.g.\n"
            "# AWS_REGION=eu-west-1, WEIR_BUCKET=…, WEIR_EMR_APPLICATION_ID=…,\n"
            "# WEIR_EMR_ROLE_ARN=….\n"
            "# The stream is an EMR Serverless streaming job run (`weir emr submit stream\n"
            "# --serverless`), started once, not by cron. A failed job run exits 1 (the checks'\n"
            "# exit 3 becomes a FAILED run).\n"
        )
    else:
        text += (
            "# The stream runs under a service manager (`weir stream`), not cron. `weir dq run`\n"
            "# exits 3 when a critical check failed.\n"
        )
    text += (
        "# Hourly: batch rebuild, the checks of that batch run, the merge (its gate decides\n"
        "# whether the batch run is published), the checks of the unified table and the speed "
        "view.\n"
    )
    text += _line(HOURLY_CRON, "hourly", "hourly", [command(job) for job in HOURLY]) + "\n"
    text += "# Weekly: OPTIMIZE and VACUUM every table (the hourly lock: not beside a merge).\n"
    text += _line(WEEKLY_CRON, "hourly", "maintain", [command(job) for job in WEEKLY]) + "\n"
    if not packaged:
        # A job run every 15 minutes would start an EMR Serverless driver as often: locally only.
        text += "# Every 15 minutes: the unified table's freshness and volume between merges.\n"
        text += _line(FRESHNESS_CRON, "freshness", "dq", [command(FRESHNESS)]) + "\n"
    return text


def schedules_folder_files() -> dict[str, str]:
    """The generated files of ``schedules/``, by name."""
    return {"weir.crontab": crontab(packaged=False), "weir-emr.crontab": crontab(packaged=True)}


def write_schedules_folder(folder: Path) -> list[Path]:
    written = []
    for name, text in schedules_folder_files().items():
        path = folder / name
        path.write_text(text, "utf-8")
        written.append(path)
    return written


__all__ = [
    "FRESHNESS",
    "HOURLY",
    "HOURLY_CRON",
    "HOURLY_STEPS_FILE",
    "JOB_RUNS_FILE",
    "SCHEDULE_FOLDER",
    "UPLOADED_JOB_RUNS",
    "WEEKLY",
    "WEEKLY_CRON",
    "WEEKLY_STEPS_FILE",
    "ScheduledJob",
    "cli_step",
    "crontab",
    "dag_jobs",
    "emr_steps",
    "job_runs_document",
    "schedule_files",
    "schedules_folder_files",
    "stream_job",
    "upload_schedule",
]


if __name__ == "__main__":
    for path in write_schedules_folder(Path(sys.argv[1] if len(sys.argv) > 1 else "schedules")):
        print(path)
