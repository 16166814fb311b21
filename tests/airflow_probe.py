"""Run by tests/test_schedules.py with the Airflow environment's Python (``.venv-airflow``):

    python airflow_probe.py DAGS_FOLDER [JOB_RUNS_FILE]

Loads the DAGs with Airflow's DagBag and prints one JSON line: the import errors, each DAG's
schedule and tasks; with a job-runs document, also what every Weir task sends to EMR
Serverless when it runs. The tasks run their real ``execute`` against a botocore client whose
answers are stubbed (botocore's Stubber: requests are still validated against the service
model, nothing leaves the machine). The Airflow Variable is given as ``AIRFLOW_VAR_…`` and the
connection as ``AIRFLOW_CONN_…``: Airflow reads both from the environment, no database.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from datetime import datetime, timezone
from typing import Any
from unittest import mock

import boto3
from botocore.stub import Stubber

VARIABLE = "AIRFLOW_VAR_WEIR_JOB_RUNS"
REGION = "us-east-1"
NOW = datetime(2026, 3, 1, 10, 5, tzinfo=timezone.utc)
JOB_RUN_ID = "00fjobrun0000001"
OK = {"ResponseMetadata": {"HTTPStatusCode": 200}}


def arn(application_id: str, run_id: str = "") -> str:
    resource = f"/applications/{application_id}" + (f"/jobruns/{run_id}" if run_id else "")
    return f"arn:aws:emr-serverless:{REGION}:123456789012:{resource}"


def dag_report(bag: Any) -> dict[str, Any]:
    return {
        dag.dag_id: {
            "schedule": dag.timetable.summary,
            "tasks": {
                task.task_id: {
                    "upstream": sorted(task.upstream_task_ids),
                    "trigger_rule": str(task.trigger_rule),
                    "retries": task.retries,
                    "kind": type(task).__name__,
                }
                for task in dag.tasks
            },
        }
        for dag in bag.dags.values()
    }


def client() -> Any:
    return boto3.client(
        "emr-serverless",
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def application(application_id: str, state: str = "STARTED") -> dict[str, Any]:
    return {
        "application": {
            "applicationId": application_id,
            "arn": arn(application_id),
            "releaseLabel": "emr-7.12.0",
            "type": "SPARK",
            "state": state,
            "createdAt": NOW,
            "updatedAt": NOW,
        },
        **OK,
    }


def job_run(application_id: str, state: str) -> dict[str, Any]:
    return {
        "jobRun": {
            "applicationId": application_id,
            "jobRunId": JOB_RUN_ID,
            "arn": arn(application_id, JOB_RUN_ID),
            "createdBy": "arn:aws:iam::123456789012:user/airflow",
            "createdAt": NOW,
            "updatedAt": NOW,
            "executionRole": "arn:aws:iam::123456789012:role/weir-emr-job",
            "state": state,
            "stateDetails": "Job run succeeded"
            if state == "SUCCESS"
            else "Job failed, exit code 3",
            "releaseLabel": "emr-7.12.0",
            "jobDriver": {"sparkSubmit": {"entryPoint": "s3://a/b.py"}},
        },
        **OK,
    }


class TaskInstance:
    """What the operator's extra links need of a task instance."""

    def xcom_push(self, key: str, value: Any, **kwargs: Any) -> None:
        pass


def submit(
    task: Any,
    document: dict[str, Any],
    final_state: str = "SUCCESS",
    application_state: str = "STARTED",
) -> dict[str, Any]:
    """Run one Weir task, EMR Serverless answering for ``document``'s application; the
    StartJobRun request it sent, the operations it called, and what it returned or the error
    it ended with."""
    from airflow.providers.amazon.aws.hooks.emr import EmrServerlessHook

    # A fresh hook per run: the operator caches its hook and the hook its client.
    task.__dict__.pop("hook", None)
    emr = client()
    sent: dict[str, Any] = {}

    def record(params: dict[str, Any], **kwargs: Any) -> None:
        sent.update(params)

    emr.meta.events.register("before-parameter-build.emr-serverless.StartJobRun", record)
    outcome: dict[str, Any] = {"operations": []}
    emr.meta.events.register(
        "before-parameter-build.emr-serverless",
        lambda model, **kwargs: outcome["operations"].append(model.name),
    )
    stub = Stubber(emr)
    with stub, mock.patch.object(EmrServerlessHook, "conn", emr):
        application_id = document["job_runs"][task.task_id]["applicationId"]
        stub.add_response("get_application", application(application_id, application_state))
        if application_state != "STARTED":
            stub.add_response("start_application", dict(OK))
            stub.add_response("get_application", application(application_id))
        stub.add_response(
            "start_job_run",
            {
                "applicationId": application_id,
                "jobRunId": JOB_RUN_ID,
                "arn": arn(application_id, JOB_RUN_ID),
                **OK,
            },
        )
        if task.wait_for_completion:
            stub.add_response("get_job_run", job_run(application_id, final_state))
        try:
            outcome["returned"] = task.execute({"ti": TaskInstance()})
        except Exception as error:
            outcome["error"] = f"{type(error).__name__}: {error}"
    outcome["request"] = sent
    return outcome


def run_summary(name: str, state: str, application_id: str) -> dict[str, Any]:
    return {
        "applicationId": application_id,
        "id": f"id-{name}",
        "name": name,
        "arn": arn(application_id, f"id-{name}"),
        "createdBy": "arn:aws:iam::123456789012:user/airflow",
        "createdAt": NOW,
        "updatedAt": NOW,
        "executionRole": "arn:aws:iam::123456789012:role/weir-emr-job",
        "state": state,
        "stateDetails": "-",
        "releaseLabel": "emr-7.12.0",
    }


def stream_check(task: Any, pages: list[list[tuple[str, str]]], application_id: str) -> dict:
    """Run a stream check against ``pages`` of (name, state) job runs; what it asked and did."""
    from airflow.providers.amazon.aws.hooks.emr import EmrServerlessHook

    emr = client()
    asked: list[dict[str, Any]] = []
    emr.meta.events.register(
        "before-parameter-build.emr-serverless.ListJobRuns",
        lambda params, **kwargs: asked.append(dict(params)),
    )
    stub = Stubber(emr)
    for number, page in enumerate(pages):
        response: dict[str, Any] = {
            "jobRuns": [run_summary(name, state, application_id) for name, state in page],
            **OK,
        }
        if number + 1 < len(pages):
            response["nextToken"] = f"page-{number + 1}"
        stub.add_response("list_job_runs", response)
    outcome: dict[str, Any] = {"asked": asked, "operations": []}
    emr.meta.events.register(
        "before-parameter-build.emr-serverless",
        lambda model, **kwargs: outcome["operations"].append(model.name),
    )
    with stub, mock.patch.object(EmrServerlessHook, "conn", emr):
        try:
            outcome["returned"] = task.python_callable()
        except Exception as error:
            outcome["error"] = f"{type(error).__name__}: {error}"
    return outcome


def behaviour(bag: Any, document_text: str) -> dict[str, Any]:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    document = json.loads(document_text)
    tasks = {task.task_id: task for dag in bag.dags.values() for task in dag.tasks}
    weir_tasks = [name for name, task in tasks.items() if type(task).__name__ == "WeirJobRun"]
    report: dict[str, Any] = {}

    os.environ.pop(VARIABLE, None)
    report["without_variable"] = submit(tasks["batch_rebuild"], document)

    os.environ[VARIABLE] = document_text
    report["submitted"] = {name: submit(tasks[name], document) for name in weir_tasks}
    report["failed_run"] = submit(tasks["dq_batch_run"], document, final_state="FAILED")
    report["stopped_application"] = submit(
        tasks["batch_rebuild"], document, application_state="STOPPED"
    )

    reads: list[dict[str, Any]] = []

    def read_key(self: Any, key: str, bucket_name: str | None = None) -> str:
        reads.append({"bucket": bucket_name, "key": key})
        return document_text

    os.environ[VARIABLE] = "s3://acme-code/weir/code/schedule/job-runs.json"
    with mock.patch.object(S3Hook, "read_key", read_key):
        report["from_s3"] = {"outcome": submit(tasks["merge"], document), "reads": reads}

    os.environ[VARIABLE] = document_text
    application_id = document["job_runs"]["stream"]["applicationId"]
    checks = {
        "running_on_second_page": (
            "stream_running",
            [[("weir-batch-0.1.0-abc", "RUNNING")], [("weir-stream-0.1.0-abc", "RUNNING")]],
        ),
        "none_running": ("stream_running", [[("weir-merge-0.1.0-abc", "RUNNING")]]),
        "one_pending": ("no_stream_active", [[("weir-stream-0.1.0-abc", "PENDING")]]),
        "none_active": ("no_stream_active", [[]]),
    }
    report["stream_checks"] = {
        case: stream_check(tasks[task_id], pages, application_id)
        for case, (task_id, pages) in checks.items()
    }
    module_globals = tasks["stream_running"].python_callable.__globals__
    report["stream_run_prefix"] = module_globals["STREAM_RUN_PREFIX"]
    report["wait"] = {
        name: {
            "wait_for_completion": tasks[name].wait_for_completion,
            "seconds": tasks[name].waiter_delay * tasks[name].waiter_max_attempts,
        }
        for name in weir_tasks
    }
    return report


def main() -> None:
    from airflow.models.dagbag import DagBag

    os.environ.pop(VARIABLE, None)  # parsing the DAGs must not need it
    os.environ.setdefault("AIRFLOW_CONN_AWS_DEFAULT", f"aws://?region_name={REGION}")
    bag = DagBag(dag_folder=sys.argv[1], include_examples=False)
    report: dict[str, Any] = {
        "errors": {path: str(error) for path, error in bag.import_errors.items()},
        "dags": dag_report(bag),
    }
    if len(sys.argv) > 2 and not report["errors"]:
        with open(sys.argv[2], encoding="utf-8") as file:
            text = file.read()
        try:
            report["behaviour"] = behaviour(bag, text)
        except Exception:
            report["behaviour_error"] = traceback.format_exc()
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
