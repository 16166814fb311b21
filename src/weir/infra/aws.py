"""The local AWS endpoint: moto in server mode, speaking Kinesis, S3, Glue and EMR to boto3.

``python -m moto.server -H 127.0.0.1 -p <infra.aws_port>``, started in the state folder,
logging to ``<state_dir>/logs/aws.log``. moto keeps its state in memory: `weir infra down`
forgets every stream, bucket and catalog entry, and `weir infra up` recreates the Kinesis
stream (``sources.kinesis.stream``/``shards``) and, when ``lake.root`` is on S3, the lake bucket.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from typing import Any, Optional

from weir.aws import aws_client, lake_bucket
from weir.config import WeirConfig
from weir.errors import WeirError
from weir.infra.process import (
    DeadlineExceededError,
    ManagedProcess,
    port_accepts,
    port_is_free,
    wait_until,
)
from weir.infra.status import ComponentStatus, PortInUseError, failure

LOCAL_HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 60.0  # typically ~2 s
STOP_TIMEOUT_SECONDS = 15.0
STREAM_TIMEOUT_SECONDS = 30.0


class AwsEndpoint:
    """moto's server on 127.0.0.1:``infra.aws_port``."""

    name = "aws"

    def __init__(self, config: WeirConfig) -> None:
        self.config = config
        self.state_dir = Path(config.infra.state_dir)
        self.port = config.infra.aws_port
        self.process = ManagedProcess(self.name, self.state_dir, signature="moto.server")

    @property
    def endpoint(self) -> str:
        return f"http://{LOCAL_HOST}:{self.port}"

    def client(self, service: str, **options: Any):
        """A boto3 client for ``service`` at this endpoint (short timeouts, no retries)."""
        options = {
            "connect_timeout": 2,
            "read_timeout": 10,
            "retries": {"max_attempts": 1},
            **options,
        }
        return aws_client(self.config, service, endpoint_url=self.endpoint, **options)

    def preflight(self) -> None:
        missing = [m for m in ("moto.server", "flask") if importlib.util.find_spec(m) is None]
        if missing:
            raise WeirError(
                f"the local AWS endpoint needs moto[server] ({', '.join(missing)} not found in "
                f"{sys.executable}): run `make setup` or `pip install -e '.[local]'`"
            )
        if not port_is_free(self.port, LOCAL_HOST):
            raise PortInUseError(self.port, "infra.aws_port", "the local AWS endpoint")

    def launch(self, stop_with_parent: bool = False) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "moto.server", "-H", LOCAL_HOST, "-p", str(self.port)]
        return self.process.start(command, stop_with_parent=stop_with_parent)

    def _answers(self) -> Optional[dict]:
        from botocore.exceptions import BotoCoreError, ClientError

        if not port_accepts(self.port, LOCAL_HOST):
            return None
        try:
            return self.client("kinesis").list_streams()
        except (BotoCoreError, ClientError):
            return None

    def wait_ready(self, pid: int) -> float:
        """Wait until the endpoint answers Kinesis ListStreams; returns the seconds waited."""
        started = time.monotonic()

        def answering():
            if self.process.exited(pid):
                raise failure(
                    f"the AWS endpoint (moto, pid {pid}) exited during start-up",
                    self.process.log_file,
                )
            return self._answers()

        try:
            wait_until(answering, timeout=START_TIMEOUT_SECONDS, what="AWS endpoint start")
        except DeadlineExceededError as error:
            raise failure(
                f"the AWS endpoint (pid {pid}) did not answer on {self.endpoint}: {error}",
                self.process.log_file,
            ) from None
        return time.monotonic() - started

    def ensure_resources(self) -> list[str]:
        """Create the Kinesis stream (and the lake bucket on S3) unless they exist."""
        return [
            self._ensure_stream(),
            *([self._ensure_bucket()] if lake_bucket(self.config) else []),
        ]

    def _ensure_stream(self) -> str:
        kinesis = self.client("kinesis")
        stream = self.config.sources.kinesis.stream
        shards = self.config.sources.kinesis.shards
        created = "exists"
        if stream not in kinesis.list_streams()["StreamNames"]:
            kinesis.create_stream(StreamName=stream, ShardCount=shards)
            created = "created"

        def active_shards():
            summary = kinesis.describe_stream_summary(StreamName=stream)
            summary = summary["StreamDescriptionSummary"]
            return summary["OpenShardCount"] if summary["StreamStatus"] == "ACTIVE" else None

        found = wait_until(
            active_shards, timeout=STREAM_TIMEOUT_SECONDS, what=f"Kinesis stream {stream} active"
        )
        if found != shards:
            raise WeirError(
                f"Kinesis stream {stream!r} has {found} open shards but sources.kinesis.shards "
                f"is {shards}: set the key to {found}, or run `weir infra down` and `up` again "
                "(the local endpoint forgets its streams when it stops)"
            )
        return f"kinesis stream {stream} ({shards} shards, {created})"

    def _ensure_bucket(self) -> str:
        bucket = lake_bucket(self.config)
        s3 = self.client("s3")
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if bucket in existing:
            return f"s3 bucket {bucket} (exists)"
        region = self.config.aws.region
        if region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
            )
        return f"s3 bucket {bucket} (created)"

    def stop(self) -> Optional[int]:
        return self.process.stop(timeout=STOP_TIMEOUT_SECONDS)

    def status(self) -> ComponentStatus:
        """Running? Answering ListStreams? Do the stream (and lake bucket) exist?"""
        pid = self.process.running_pid()

        def report(state: str, detail: str) -> ComponentStatus:
            return ComponentStatus(self.name, self.endpoint, pid, state, detail)

        if pid is None:
            if port_accepts(self.port, LOCAL_HOST):
                return report(
                    "port taken", f"port {self.port} is in use by a process Weir did not start"
                )
            return report("stopped", "not running")
        listing = self._answers()
        if listing is None:
            return report("unhealthy", "no answer to Kinesis ListStreams")
        stream = self.config.sources.kinesis.stream
        if stream in listing["StreamNames"]:
            summary = self.client("kinesis").describe_stream_summary(StreamName=stream)
            shards = summary["StreamDescriptionSummary"]["OpenShardCount"]
            detail = f"kinesis stream {stream}: {shards} shards"
        else:
            detail = f"kinesis stream {stream} missing"
        bucket = lake_bucket(self.config)
        if bucket:
            buckets = {b["Name"] for b in self.client("s3").list_buckets().get("Buckets", [])}
            detail += f"; s3 bucket {bucket}" + ("" if bucket in buckets else " missing")
        return report("healthy", detail)
