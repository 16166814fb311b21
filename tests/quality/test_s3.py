"""`weir dq run` with its lake on S3 (``s3a://``), against the session's local AWS endpoint.

The smallest check run that publishes Data Docs: the ``raw`` suite on a lake holding only the
tiny RAW table of quality.builders. Its results rows go to ``dq/results`` and its site to
``dq/docs/`` in the bucket, both through Spark's Hadoop filesystem; the test reads the site
back with boto3 through the same endpoint configuration. About 40 s at load 5 on 2 cores,
most of it Spark and Delta on S3A (the session's Spark and local stack are shared).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from layers.batch.test_s3 import bucket_settings
from pyspark.sql import SparkSession

from quality import builders as b
from weir.aws import aws_client
from weir.config import WeirConfig
from weir.lake import LakeLayout
from weir.quality import run_checks
from weir.quality import suites as s
from weir.schemas import RAW_SCHEMA

pytestmark = pytest.mark.slow

LAKE_PREFIX = "lake"


@pytest.fixture
def s3_lake(
    spark: SparkSession, weir_config: WeirConfig, local_infra: WeirConfig
) -> Iterator[WeirConfig]:
    """A fresh bucket on the local endpoint holding the tiny RAW table (no batch run: the raw
    suite needs none); yields the config whose lake root is ``s3a://<bucket>/lake``."""
    bucket = f"weir-dq-{uuid.uuid4().hex[:8]}"
    aws_client(local_infra, "s3").create_bucket(Bucket=bucket)
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    settings = bucket_settings(bucket, local_infra)
    for key, value in settings.items():
        hadoop.set(key, value)
    root = f"s3a://{bucket}/{LAKE_PREFIX}"
    config = local_infra.model_copy(
        update={"lake": weir_config.lake.model_copy(update={"root": root})}
    )
    lake = LakeLayout.from_config(config)
    b.write_lake(spark, lake, {lake.raw: b.frame(spark, b.raw_rows(), RAW_SCHEMA)})
    yield config
    for key in settings:
        hadoop.unset(key)


def read_text(config: WeirConfig, uri: str) -> str:
    """The object at ``uri`` (s3a://bucket/key), read with boto3 at the configured endpoint."""
    bucket, _, key = uri[len("s3a://") :].partition("/")
    body = aws_client(config, "s3").get_object(Bucket=bucket, Key=key)["Body"]
    return body.read().decode("utf-8")


def keys(config: WeirConfig, uri: str) -> list[str]:
    """The keys under the prefix ``uri`` (s3a://bucket/prefix), listed with boto3."""
    bucket, _, prefix = uri[len("s3a://") :].partition("/")
    listed = aws_client(config, "s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for item in listed.get("Contents", [])]


def test_checks_on_an_s3_lake_record_their_rows_and_publish_data_docs_to_the_bucket(
    spark: SparkSession, s3_lake: WeirConfig
) -> None:
    lake = LakeLayout.from_config(s3_lake)

    report = run_checks(spark, s3_lake, suites=[s.RAW], clock=lambda: b.NOW)

    assert report.passed and report.outcomes
    rows = spark.read.format("delta").load(lake.dq_results)
    assert rows.where(f"run_id = '{report.run_id}'").count() == len(report.outcomes)
    assert keys(s3_lake, f"{lake.dq_results}/_delta_log/")
    assert report.docs_index == f"{lake.dq_docs}/index.html"
    index = read_text(s3_lake, report.docs_index)
    # The index's table links each validation result of the run:
    # validations/<suite, one folder per dotted part>/<run name>/<run time>/<batch>.html
    links = re.findall(r"'_table_row_link_path': '(validations/[^']+[.]html)'", index)
    run_pages = sorted(link for link in links if f"/{report.run_id}/" in link)
    assert [page.split("/")[1:3] for page in run_pages] == [["raw", "metrics"], ["raw", "schema"]]
    for page in run_pages:
        assert report.run_id in read_text(s3_lake, f"{lake.dq_docs}/{page}")
