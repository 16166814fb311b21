"""Weir's scheduled jobs on Amazon EMR Serverless, for Airflow (Amazon MWAA) 2.11.

Three DAGs (docs/operations.md, "Airflow"):

* ``weir_hourly`` at five past every hour: the batch rebuild (cutoff = the hour just
  passed), the data-quality checks of that batch run, the merge (its gate reads those
  checks: a batch run whose critical checks failed is not published, the previous state is
  served), then the checks of what the merge published and of the speed view. Beside them, a
  check that the long-running stream job run is still running.
* ``weir_maintenance`` weekly: OPTIMIZE and VACUUM every table.
* ``weir_stream``, triggered by hand: starts the stream job run, unless one is already active
  (two streams would share one checkpoint).

Every Weir task starts the EMR Serverless job run `weir emr schedule` generated for it from the
package `weir package` built: exactly the request `weir emr submit JOB --serverless` sends
(the packed Python environment, the packaged conf and jars, every Spark setting). The requests
are read when a task runs, never while this file is parsed, from the Airflow Variable
``weir_job_runs``: the JSON document itself (``dist/emr/schedule/job-runs.json``) or the
``s3://`` URI `weir emr schedule --upload` printed (then read with the ``aws_default``
connection). Scheduling a new package is running that command again.
This file imports nothing of Weir's: MWAA's workers have Airflow, not Spark.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from airflow import DAG
from airflow.decorators import task
from airflow.exceptions import AirflowException
from airflow.models import Variable
from airflow.providers.amazon.aws.hooks.emr import EmrServerlessHook
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.operators.emr import EmrServerlessStartJobOperator
from airflow.utils.trigger_rule import TriggerRule

JOB_RUNS_VARIABLE = "weir_job_runs"
JOB_RUNS_FORMAT = 1  # weir.deploy.schedule.JOB_RUNS_FORMAT
AWS_CONN_ID = "aws_default"
# `weir emr submit` names a job run weir-<job>-<package id>.
STREAM_RUN_PREFIX = "weir-stream-"
STREAM_TASK = "stream"
# Job run states in which a stream holds its checkpoint (a failed attempt being retried too).
ACTIVE_STATES = ["SUBMITTED", "PENDING", "SCHEDULED", "RUNNING", "QUEUED", "CANCELLING"]
# How long a task follows its job run, as `weir emr submit --wait` does (6 h); the operator
# cancels the run when this runs out.
WAIT_SECONDS = 6 * 3600
POLL_SECONDS = 30
# The StartJobRun fields the operator takes by name; the rest of a request (mode, tags,
# retryPolicy) goes to start_job_run as it is, through the operator's ``config``.
NAMED_FIELDS = {
    "applicationId": "application_id",
    "executionRoleArn": "execution_role_arn",
    "jobDriver": "job_driver",
    "configurationOverrides": "configuration_overrides",
    "name": "name",
}


def job_runs_document() -> dict[str, Any]:
    """The document of the ``weir_job_runs`` Variable: inline JSON, or read from the ``s3://``
    URI it names."""
    value = Variable.get(JOB_RUNS_VARIABLE, default_var=None)
    if not value:
        raise AirflowException(
            f"the Airflow Variable {JOB_RUNS_VARIABLE} is not set: set it to the s3:// URI "
            "`weir emr schedule --upload` printed, or to the job-runs.json it wrote"
        )
    value = value.strip()
    if value.startswith("s3://"):
        bucket, _, key = value[len("s3://") :].partition("/")
        value = S3Hook(aws_conn_id=AWS_CONN_ID).read_key(key=key, bucket_name=bucket)
    document = json.loads(value)
    if not isinstance(document, dict) or document.get("format") != JOB_RUNS_FORMAT:
        raise AirflowException(
            f"{JOB_RUNS_VARIABLE} is not a job-runs document of `weir emr schedule` "
            f"(format {JOB_RUNS_FORMAT})"
        )
    return document


class WeirJobRun(EmrServerlessStartJobOperator):
    """Starts the job run ``job_runs[<task id>]`` of the ``weir_job_runs`` document, read when
    the task runs, and follows it until it ends (unless ``wait_for_completion=False``).

    A job run's failure (spark-submit's non-zero exit: 3 for failed checks included) fails the
    task, and the task log says why.
    """

    def __init__(self, *, task_id: str, **kwargs: Any) -> None:
        super().__init__(
            task_id=task_id,
            application_id="",
            execution_role_arn="",
            job_driver={},
            aws_conn_id=AWS_CONN_ID,
            waiter_delay=POLL_SECONDS,
            waiter_max_attempts=WAIT_SECONDS // POLL_SECONDS,
            **kwargs,
        )

    def execute(self, context: Any, event: Any = None) -> Any:
        document = job_runs_document()
        request = dict(document.get("job_runs", {}).get(self.task_id) or {})
        missing = [
            key
            for key in ("applicationId", "executionRoleArn", "jobDriver")
            if not request.get(key)
        ]
        if missing:
            raise AirflowException(
                f"the {JOB_RUNS_VARIABLE} document of package {document.get('package_id')} has "
                f"no job run for task {self.task_id} ({', '.join(missing)}): run "
                "`weir emr schedule` of a Weir that ships this DAG"
            )
        self.log.info(
            "Weir package %s: job run %s", document.get("package_id"), request.get("name")
        )
        for key, attribute in NAMED_FIELDS.items():
            setattr(self, attribute, request.pop(key, None))
        self.config = request
        return super().execute(context, event)


def weir_streams(states: list[str]) -> tuple[str, list[dict[str, Any]]]:
    """The stream's application (the document's) and its Weir stream job runs in ``states``."""
    application_id = job_runs_document()["job_runs"][STREAM_TASK]["applicationId"]
    client = EmrServerlessHook(aws_conn_id=AWS_CONN_ID).conn
    runs: list[dict[str, Any]] = []
    page: dict[str, Any] = {}
    while True:
        token = {"nextToken": page["nextToken"]} if page.get("nextToken") else {}
        page = client.list_job_runs(applicationId=application_id, states=states, **token)
        runs += [
            r for r in page.get("jobRuns", []) if r.get("name", "").startswith(STREAM_RUN_PREFIX)
        ]
        if not page.get("nextToken"):
            return application_id, runs


@task(task_id="stream_running")
def stream_running() -> str:
    """Fail when no Weir stream job run is RUNNING (alerting is Airflow's failure callback)."""
    application_id, runs = weir_streams(["RUNNING"])
    if not runs:
        raise AirflowException(f"no {STREAM_RUN_PREFIX}… job run is RUNNING on {application_id}")
    return runs[0]["name"]


@task(task_id="no_stream_active")
def no_stream_active() -> None:
    """Fail when a Weir stream job run is already active: a second one would share its
    checkpoint."""
    application_id, runs = weir_streams(ACTIVE_STATES)
    if runs:
        run = runs[0]
        raise AirflowException(
            f"{run['name']} ({run['id']}) is {run['state']} on {application_id}; cancel it "
            "first to start another"
        )


DEFAULTS = {
    "owner": "weir",
    "retries": 1,
    "retry_delay": timedelta(minutes=5),
}

with DAG(
    dag_id="weir_hourly",
    description="batch rebuild -> checks -> merge (gated) -> checks of what it published",
    schedule="5 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULTS,
    tags=["weir"],
) as hourly:
    batch = WeirJobRun(task_id="batch_rebuild")
    # exit 3 is a verdict on the data, not a failure to retry
    checks = WeirJobRun(task_id="dq_batch_run", retries=0)
    # The merge runs whatever the checks said: its gate decides whether the new batch run is
    # published (dq.gate); the speed layer's newest windows are published either way.
    merge = WeirJobRun(task_id="merge", trigger_rule=TriggerRule.ALL_DONE)
    published = WeirJobRun(task_id="dq_unified", retries=0)
    batch >> checks >> merge >> published
    stream_running()

with DAG(
    dag_id="weir_maintenance",
    description="OPTIMIZE and VACUUM every Weir table",
    schedule="30 3 * * 0",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULTS,
    tags=["weir"],
) as maintenance:
    WeirJobRun(task_id="maintain")

with DAG(
    dag_id="weir_stream",
    description="start the long-running stream job run (EMR Serverless restarts it on failure)",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULTS, "retries": 0},
    tags=["weir"],
) as stream:
    no_stream_active() >> WeirJobRun(task_id=STREAM_TASK, wait_for_completion=False)
