"""The batch layer with its lake on S3 (``s3a://``), against the session's local AWS endpoint.

The shared SparkSession was built from conf/local.yaml's settings, whose S3A endpoint is the
default port of `weir infra up` (5055); ``local_infra`` runs its own moto server on a free
port. Hadoop's per-bucket keys (``fs.s3a.bucket.<name>.*``) point one fresh bucket at that
server for the test only, and are removed after: no new session, and nothing else changes.
"""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from pyspark.sql import SparkSession

from weir.aws import aws_client
from weir.config import WeirConfig
from weir.control import MODE_FULL, RUN_SUCCEEDED, batch_runs
from weir.lake import LakeLayout
from weir.layers.batch import RebuildRequest, rebuild_batch

from .builders import (
    assert_view,
    config_for,
    expected_view,
    view,
)
from .test_adopt import (
    DAY_1_FILE,
    DAY_1_LINES,
    DAY_2_FILE,
    DAY_2_LINES,
    EXPECTED_AFTER_TWO_DAYS,
)

pytestmark = pytest.mark.slow


def bucket_settings(bucket: str, config: WeirConfig) -> dict[str, str]:
    """Hadoop S3A settings for one bucket: the local endpoint, path-style, its credentials."""
    endpoint = config.aws.endpoint_url
    assert endpoint is not None
    settings = {
        "endpoint": endpoint,
        "endpoint.region": config.aws.region,
        "path.style.access": "true",
        "connection.ssl.enabled": str(endpoint.startswith("https://")).lower(),
        "aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        "access.key": config.aws.access_key_id or "testing",
        "secret.key": config.aws.secret_access_key or "testing",
    }
    return {f"fs.s3a.bucket.{bucket}.{key}": value for key, value in settings.items()}


@pytest.fixture
def s3_bucket(spark: SparkSession, local_infra: WeirConfig) -> Iterator[str]:
    """A new bucket on the session's local endpoint, reachable from the shared session."""
    bucket = f"weir-batch-{uuid.uuid4().hex[:8]}"
    aws_client(local_infra, "s3").create_bucket(Bucket=bucket)
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    settings = bucket_settings(bucket, local_infra)
    for key, value in settings.items():
        hadoop.set(key, value)
    yield bucket
    for key in settings:
        hadoop.unset(key)


def put_object(config: WeirConfig, bucket: str, key: str, lines: list[str]) -> None:
    data = ("\n".join(lines) + "\n").encode("utf-8")
    body = gzip.compress(data) if key.endswith(".gz") else data
    aws_client(config, "s3").put_object(Bucket=bucket, Key=key, Body=body)


def test_rebuild_with_the_lake_and_the_input_on_s3(
    spark: SparkSession, local_infra: WeirConfig, s3_bucket: str
) -> None:
    # uploaded in this order: S3 stamps the day-1 object first, so e1's first copy is there
    put_object(local_infra, s3_bucket, f"firehose/{DAY_1_FILE}", DAY_1_LINES)
    put_object(local_infra, s3_bucket, f"firehose/{DAY_2_FILE}", DAY_2_LINES)
    lake = LakeLayout(root=f"s3a://{s3_bucket}/lake")
    # The stack's config: the run's writer fence lives in the bucket, reached through boto3.
    config = config_for(local_infra, lake)
    # ingest_time is the objects' LastModified (now): a cutoff of now reads them
    cutoff = datetime.now(timezone.utc)
    request = RebuildRequest(cutoff=cutoff, input=f"s3a://{s3_bucket}/firehose")

    run = rebuild_batch(spark, config, request)

    assert (run.status, run.mode, run.records_in, run.quarantined) == (
        RUN_SUCCEEDED,
        MODE_FULL,
        7,
        2,
    )
    assert_view(view(spark, lake), expected_view(spark, EXPECTED_AFTER_TWO_DAYS))
    assert batch_runs(spark, lake) == [run]
    keys = {
        item["Key"]
        for item in aws_client(local_infra, "s3").list_objects_v2(Bucket=s3_bucket)["Contents"]
    }
    assert any(key.startswith("lake/batch/telemetry_minute/_delta_log/") for key in keys)
    assert any(key.startswith("lake/raw/telemetry/ingest_date=") for key in keys)
