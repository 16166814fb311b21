"""Weir's scheduled jobs on Amazon EMR Serverless, for Airflow (Amazon MWAA) 2.11.

Two DAGs (docs/operations.md, "Airflow"):

* ``weir_hourly`` at five past every hour: the batch rebuild (cutoff = the hour just
  passed), the data-quality checks of that batch run, the merge (its gate reads those
  checks: a batch run whose critical checks failed is not published, the previous state is
  served), then the checks of the unified table the merge published. Beside them, a check
  that the long-running stream job is still running (the stream is started once, by hand or
  by a deployment, and is only monitored here).
* ``weir_maintenance`` weekly: OPTIMIZE and VACUUM every table.

Every Weir job is the same spark-submit script the local `weir` commands run, started as an
EMR Serverless job run. Deployment values come from Airflow Variables, read by templates when a
task runs (never while the file is parsed): ``weir_emr_application_id``,
``weir_emr_execution_role_arn``, ``weir_code_uri`` (the s3:// prefix `weir package`
uploads to: ``jobs/``, ``weir.zip`` and ``conf/emr.yaml``) and ``weir_log_uri``.
This file imports nothing of Weir's: MWAA's workers have Airflow, not Spark.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.decorators import task
from airflow.providers.amazon.aws.hooks.emr import EmrServerlessHook
from airflow.providers.amazon.aws.operators.emr import EmrServerlessStartJobOperator
from airflow.utils.trigger_rule import TriggerRule

APPLICATION_ID = "{{ var.value.weir_emr_application_id }}"
EXECUTION_ROLE_ARN = "{{ var.value.weir_emr_execution_role_arn }}"
CODE_URI = "{{ var.value.weir_code_uri }}"
LOG_URI = "{{ var.value.weir_log_uri }}"
STREAM_JOB_NAME = "weir-stream"
# The job's own arguments; the package and the config file travel with every job run.
SPARK_SUBMIT_PARAMETERS = f"--py-files {CODE_URI}/weir.zip --files {CODE_URI}/conf/emr.yaml"
# spark-submit's exit code ends the job run: 3 (a critical data-quality check failed) fails
# the task like any other non-zero code, and the task log says which checks.


def weir_job(task_id: str, script: str, *arguments: str, **options: object) -> object:
    """A task running ``jobs/<script>`` with ``--conf emr.yaml`` as an EMR Serverless job run."""
    return EmrServerlessStartJobOperator(
        task_id=task_id,
        name=f"weir-{task_id}",
        application_id=APPLICATION_ID,
        execution_role_arn=EXECUTION_ROLE_ARN,
        job_driver={
            "sparkSubmit": {
                "entryPoint": f"{CODE_URI}/jobs/{script}",
                "entryPointArguments": ["--conf", "emr.yaml", *arguments],
                "sparkSubmitParameters": SPARK_SUBMIT_PARAMETERS,
            }
        },
        configuration_overrides={
            "monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": LOG_URI}}
        },
        **options,
    )


DEFAULTS = {
    "owner": "weir",
    "retries": 1,
    "retry_delay": timedelta(minutes=5),
}

with DAG(
    dag_id="weir_hourly",
    description="batch rebuild -> checks -> merge (gated) -> checks of the unified table",
    schedule="5 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULTS,
    tags=["weir"],
) as hourly:
    batch = weir_job("batch_rebuild", "batch/rebuild.py")
    checks = weir_job(
        "dq_batch_run",
        "quality/run_checks.py",
        *("--suite", "raw", "--suite", "quarantine", "--suite", "batch"),
        *("--suite", "batch_run", "--suite", "agreement"),
        retries=0,  # exit 3 is a verdict on the data, not a failure to retry
    )
    # The merge runs whatever the checks said: its gate decides whether the new batch run is
    # published (dq.gate); the speed layer's newest windows are published either way.
    merge = weir_job("merge", "merge/merge.py", trigger_rule=TriggerRule.ALL_DONE)
    unified = weir_job(
        "dq_unified", "quality/run_checks.py", "--suite", "unified", "--suite", "speed", retries=0
    )

    @task(task_id="stream_running")
    def stream_running(application_id: str = APPLICATION_ID) -> str:
        """Fail when no job run named weir-stream is running on the application."""
        client = EmrServerlessHook(aws_conn_id="aws_default").conn
        runs = client.list_job_runs(applicationId=application_id, states=["RUNNING"])
        names = [run.get("name") for run in runs.get("jobRuns", [])]
        if STREAM_JOB_NAME not in names:
            raise RuntimeError(f"no {STREAM_JOB_NAME} job run is RUNNING on {application_id}")
        return STREAM_JOB_NAME

    batch >> checks >> merge >> unified
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
    weir_job("maintain", "maintenance/maintain.py")
