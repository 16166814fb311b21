"""The packaged jobs run with plain spark-submit, as EMR would run them, lake on ``s3a://``.

The command line is :func:`weir.deploy.submit.spark_submit_command` for the ``local`` target:
the same settings as a step, with the package read from its folder instead of S3. Its working
folder is prepared the way YARN and EMR Serverless prepare a driver's: ``environment/`` unpacked
from the packed Python 3.9 archive, and the packaged conf as ``weir.yaml``. The lake and the
checkpoints live in a bucket of the session's local S3 endpoint; only the endpoint's
credentials come from the environment (S3A's default chain), as a role's would on EMR.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import pyspark
import pytest
from chispa import assert_df_equality
from layers.batch.test_s3 import bucket_settings
from layers.streaming.builders import (
    assert_raw_and_quarantine_match_the_ledger,
    assert_speed_equals_batch,
    kafka_topic,
    ledger_records,
)
from pyspark.sql import SparkSession

from weir.aws import aws_client
from weir.cli import main
from weir.config import WeirConfig, config_from_mapping
from weir.deploy.package import ENV_ALIAS, ENV_ARCHIVE, Package, packaged_config
from weir.deploy.submit import CONF_NAME, TARGET_LOCAL, spark_submit_command
from weir.infra.process import wait_until
from weir.lake import LakeLayout
from weir.sample import mixed_sample
from weir.schemas import MINUTE_SCHEMA

from .conftest import objects, with_emr

pytestmark = pytest.mark.slow

UTC = timezone.utc
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
VIEW_COLUMNS = [f.name for f in MINUTE_SCHEMA.fields if f.name != "computed_at"]
JOB_TIMEOUT_SECONDS = 900


# --- the cluster's working folder and the command ---------------------------------------------


def localize(package: Package, config: WeirConfig, folder: Path) -> Path:
    """A driver's working folder: the environment unpacked (``spark.archives=…#environment``)
    and the packaged conf for ``config`` (``spark.files``)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(package.root / ENV_ARCHIVE) as archive:
        archive.extractall(folder / ENV_ALIAS)
    (folder / CONF_NAME).write_text(packaged_config(config)[0], "utf-8")
    return folder


def job_environment() -> dict[str, str]:
    """No WEIR__ overrides from the shell; the local endpoint's keys where S3A looks first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEIR__", "PYSPARK_"))}
    env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    # The pyspark wheel's Spark, as /usr/lib/spark is EMR's.
    env["SPARK_HOME"] = str(Path(pyspark.__file__).parent)
    return env


def command(package: Package, config: WeirConfig, job: str, *args: str) -> list[str]:
    words = spark_submit_command(
        config, package, job, list(args), root=str(package.root), target=TARGET_LOCAL
    )
    assert words[0] == "spark-submit"
    return [str(SPARK_SUBMIT), *words[1:]]


def run_job(package: Package, config: WeirConfig, folder: Path, job: str, *args: str) -> str:
    """Run one packaged job to its end; its output (the assertion shows it when it fails)."""
    done = subprocess.run(
        command(package, config, job, *args),
        cwd=folder,
        env=job_environment(),
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT_SECONDS,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, without_info(output)[-6000:]
    return output


def without_info(log: str) -> str:
    """A job's log without Spark's INFO lines: what tells why it failed."""
    return "\n".join(line for line in log.splitlines() if " INFO " not in line)


# --- the lake on S3 ---------------------------------------------------------------------------


@pytest.fixture
def s3_lake(
    spark: SparkSession, local_infra: WeirConfig, built_package: Package
) -> Iterator[WeirConfig]:
    """A config whose lake is ``s3a://<fresh bucket>/lake`` on the local endpoint, writing
    SSE-S3; the shared session can read the bucket. (SSE-KMS is what conf/emr.yaml sets, but
    the AWS SDK under S3A sends KMS parameters over HTTPS only, and the local endpoint is
    plain HTTP: test_submit checks the SSE-KMS settings.)"""
    bucket = f"weir-lake-{uuid.uuid4().hex[:8]}"
    aws_client(local_infra, "s3").create_bucket(Bucket=bucket)
    document = local_infra.model_dump()
    document["lake"] = {"root": f"s3a://{bucket}/lake", "landing": None}
    document["spark"]["driver_memory"] = "1g"
    document["spark"]["settings"]["spark.ui.enabled"] = "false"
    config = with_emr(
        config_from_mapping(document, environ={}),
        python_home=built_package.manifest["target"]["python_home"],
        s3_encryption="SSE-S3",
    )
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    settings = bucket_settings(bucket, local_infra)
    for name, value in settings.items():
        hadoop.set(name, value)
    yield config
    for name in settings:
        hadoop.unset(name)


def put_lines(config: WeirConfig, uri: str, lines: list[str]) -> None:
    bucket, _, key = uri[len("s3a://") :].partition("/")
    body = gzip.compress(("\n".join(lines) + "\n").encode("utf-8"))
    aws_client(config, "s3").put_object(Bucket=bucket, Key=key, Body=body)


def unified(spark: SparkSession, lake: LakeLayout):
    return spark.read.format("delta").load(lake.serving).select(*VIEW_COLUMNS)


# --- batch and merge --------------------------------------------------------------------------


def test_packaged_batch_and_merge_on_s3_publish_what_the_local_run_publishes(
    spark: SparkSession,
    weir_config: WeirConfig,
    s3_lake: WeirConfig,
    built_package: Package,
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    records = [
        payload for payload, _ in mixed_sample(400, seed=19, now=now - timedelta(minutes=15))
    ]
    first, second = records[: len(records) // 2], records[len(records) // 2 :]
    lake = LakeLayout.from_config(s3_lake)
    landing = f"{s3_lake.lake.root}/firehose"
    put_lines(s3_lake, f"{landing}/a.jsonl.gz", first)
    time.sleep(1.1)  # S3 stamps seconds: b is received after a
    put_lines(s3_lake, f"{landing}/b.jsonl.gz", second)
    time.sleep(1.1)  # ingest_time < cutoff: b's LastModified is before the cutoff's second
    cutoff_time = datetime.now(UTC).replace(microsecond=0)
    cutoff = cutoff_time.isoformat().replace("+00:00", "Z")
    folder = localize(built_package, s3_lake, tmp_path / "driver")

    batch_log = run_job(
        built_package, s3_lake, folder, "batch", "--cutoff", cutoff, "--input", landing
    )
    merge_log = run_job(built_package, s3_lake, folder, "merge")

    # The same files, the same order of receipt, through the local CLI on a file:// lake.
    local_landing = tmp_path / "landing"
    for name, lines, age in (("a.jsonl.gz", first, 20), ("b.jsonl.gz", second, 10)):
        path = local_landing / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8")))
        received = cutoff_time.timestamp() - age
        os.utime(path, (received, received))
    local = weir_config.model_copy(
        update={"lake": weir_config.lake.model_copy(update={"root": f"file://{tmp_path}/lake"})}
    )
    conf = tmp_path / "local.yaml"
    conf.write_text(__import__("yaml").safe_dump(local.model_dump()), "utf-8")
    assert (
        main(
            [
                "batch",
                "rebuild",
                "--conf",
                str(conf),
                "--cutoff",
                cutoff,
                "--input",
                f"file://{local_landing}",
            ]
        )
        == 0
    )
    assert main(["merge", "--conf", str(conf)]) == 0

    raw_counts = {
        name: spark.read.format("delta").load(layout.raw).count()
        for name, layout in (("s3", lake), ("local", LakeLayout.from_config(local)))
    }
    assert raw_counts == {"s3": len(records), "local": len(records)}
    expected = unified(spark, LakeLayout.from_config(local))
    assert expected.count() > 100
    assert_df_equality(unified(spark, lake), expected, ignore_row_order=True, ignore_nullable=True)
    # The driver ran the packed environment's Python 3.9, not this one.
    assert f"{ENV_ALIAS}/bin/python" in " ".join(command(built_package, s3_lake, "merge"))
    assert "Traceback" not in batch_log + merge_log
    # Every object the jobs wrote is encrypted as configured.
    written = objects(s3_lake, s3_lake.lake.root.replace("s3a://", "s3://") + "/serving")
    assert written
    for name, head in written.items():
        assert head.get("ServerSideEncryption") == "AES256", name


# --- the stream -------------------------------------------------------------------------------


class SubmittedStream:
    """The packaged stream job under spark-submit, in its own process group."""

    def __init__(self, package: Package, config: WeirConfig, folder: Path, *args: str) -> None:
        self.log_path = folder / f"stream-{uuid.uuid4().hex[:6]}.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command(package, config, "stream", "--source", "kafka", *args),
                cwd=folder,
                env=job_environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def output(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    def wait_for(self, condition, what: str) -> object:
        def running_and() -> object:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the stream exited with {self.process.returncode} before {what}:\n"
                    + without_info(self.output)[-5000:]
                )
            return condition()

        return wait_until(running_and, timeout=600, what=what, interval=0.1)

    def kill(self) -> None:
        """SIGKILL to spark-submit, its JVM and the Python driver at once."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)

    def finish(self) -> int:
        try:
            return self.process.wait(timeout=JOB_TIMEOUT_SECONDS)
        finally:
            self.kill()


def checkpoint_batches(config: WeirConfig, query: str, log: str) -> set[int]:
    """Batch ids in a query's checkpoint ``offsets`` or ``commits`` log, listed on S3."""
    folder = LakeLayout.from_config(config).checkpoint(query).replace("s3a://", "s3://")
    return {int(name) for name in objects_names(config, f"{folder}/{log}/") if name.isdigit()}


def objects_names(config: WeirConfig, uri: str) -> list[str]:
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    listing = aws_client(config, "s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [item["Key"][len(prefix) :] for item in listing.get("Contents", [])]


def in_flight(config: WeirConfig, query: str) -> Optional[int]:
    pending = checkpoint_batches(config, query, "offsets") - checkpoint_batches(
        config, query, "commits"
    )
    return max(pending) if pending else None


def test_packaged_stream_on_s3_killed_mid_batch_resumes_exactly_once(
    spark: SparkSession, s3_lake: WeirConfig, built_package: Package, tmp_path: Path
) -> None:
    from weir.simulate.faults import FaultMix
    from weir.simulate.run import SimulateOptions, run_simulation

    document = s3_lake.model_dump()
    document["sources"]["kafka"]["max_offsets_per_trigger"] = 300
    document["timing"]["trigger_interval_seconds"] = 1
    config = kafka_topic(config_from_mapping(document, environ={}))
    lake = LakeLayout.from_config(config)
    # Faults whose speed-layer result is exact (no late events, no conflicting copies).
    faults = FaultMix(
        {"duplicate": 0.03, "out_of_order": 0.05, "malformed_json": 0.02, "bad_type": 0.02}
    )
    run = run_simulation(
        config, SimulateOptions(devices=10, rate=0, count=1500, sink="kafka", seed=3, faults=faults)
    )
    assert (run.status, run.failed, run.unconfirmed) == ("completed", 0, 0)
    folder = localize(built_package, config, tmp_path / "driver")

    stream = SubmittedStream(built_package, config, folder)
    try:
        # Poll fast: kill while the archiver has a micro-batch planned but not committed.
        running = stream.wait_for(
            lambda: (
                bool(checkpoint_batches(config, "raw-kafka", "commits"))
                and (in_flight(config, "raw-kafka") or 0) >= 1
                and in_flight(config, "raw-kafka")
            ),
            "raw-kafka commits a micro-batch on S3 and starts the next",
        )
    finally:
        stream.kill()
    committed_before = checkpoint_batches(config, "raw-kafka", "commits")

    drained = SubmittedStream(built_package, config, folder, "--available-now")
    code = drained.finish()
    assert code == 0, without_info(drained.output)[-5000:]

    assert running in checkpoint_batches(config, "raw-kafka", "commits")
    assert checkpoint_batches(config, "raw-kafka", "commits") > committed_before
    assert_raw_and_quarantine_match_the_ledger(spark, lake, ledger_records(run.ledger_dir))
    assert_speed_equals_batch(spark, lake)
