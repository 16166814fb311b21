"""`weir emr status RUN` and `weir emr submit --wait`: the state of a step or a job run.

A step id (``s-…``) is looked up on ``emr.cluster_id``, any other id as a job run of
``emr.application_id``: the id `weir emr submit` printed is all a user needs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

from weir.config import WeirConfig
from weir.deploy.submit import required
from weir.errors import WeirError

# EMR step states and EMR Serverless job run states that do not change any more.
STEP_SUCCEEDED = frozenset({"COMPLETED"})
STEP_FAILED = frozenset({"CANCELLED", "FAILED", "INTERRUPTED"})
RUN_SUCCEEDED = frozenset({"SUCCESS"})
RUN_FAILED = frozenset({"FAILED", "CANCELLED"})
DEFAULT_POLL_SECONDS = 30.0


@dataclass(frozen=True)
class RunStatus:
    """One look at a run: its state and, when it failed, why."""

    run_id: str
    kind: str  # step | job run
    state: str
    detail: str
    finished: bool
    succeeded: bool

    def line(self) -> str:
        text = f"{self.kind} {self.run_id}: {self.state}"
        return f"{text} ({self.detail})" if self.detail else text


def is_step(run_id: str) -> bool:
    return run_id.startswith("s-")


def run_status(config: WeirConfig, run_id: str) -> RunStatus:
    """The current state of ``run_id``; WeirError (exit 1) when the target does not know it."""
    from botocore.exceptions import ClientError

    from weir.aws import aws_client

    try:
        if is_step(run_id):
            cluster = required(config.emr.cluster_id, "emr.cluster_id", "a step's status")
            step = aws_client(config, "emr").describe_step(ClusterId=cluster, StepId=run_id)
            status = step["Step"]["Status"]
            state = status["State"]
            failure = status.get("FailureDetails") or {}
            detail = failure.get("Message") or failure.get("Reason") or ""
            return RunStatus(
                run_id,
                "step",
                state,
                detail,
                state in STEP_SUCCEEDED | STEP_FAILED,
                state in STEP_SUCCEEDED,
            )
        application = required(config.emr.application_id, "emr.application_id", "a run's status")
        run = aws_client(config, "emr-serverless").get_job_run(
            applicationId=application, jobRunId=run_id
        )["jobRun"]
    except ClientError as error:
        raise WeirError(
            f"no run {run_id} found: {error.response['Error'].get('Message', error)}"
        ) from None
    state = run["state"]
    return RunStatus(
        run_id,
        "job run",
        state,
        run.get("stateDetails") or "",
        state in RUN_SUCCEEDED | RUN_FAILED,
        state in RUN_SUCCEEDED,
    )


def wait_for_run(
    look: Callable[[], RunStatus],
    *,
    timeout_seconds: float,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    report: Optional[Callable[[RunStatus], None]] = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> RunStatus:
    """Look until the run finishes; its last status. ``report`` sees every change of state.

    WeirError when ``timeout_seconds`` pass first (the run goes on; `weir emr status` follows it).
    """
    deadline = clock() + timeout_seconds
    last_state = None
    while True:
        status = look()
        if report is not None and status.state != last_state:
            report(status)
        last_state = status.state
        if status.finished:
            return status
        if clock() >= deadline:
            raise WeirError(
                f"{status.kind} {status.run_id} still {status.state} after {timeout_seconds:.0f} s;"
                f" follow it with `weir emr status {status.run_id}`"
            )
        sleep(poll_seconds)


__all__ = ["RunStatus", "is_step", "run_status", "wait_for_run"]
