"""The local AWS endpoint speaks Kinesis (2 shards), S3, Glue and EMR to boto3."""

from __future__ import annotations

import uuid

import pytest

from weir.aws import aws_client
from weir.config import WeirConfig, config_from_mapping
from weir.infra import AwsEndpoint

pytestmark = pytest.mark.slow


def test_stream_has_the_configured_shards(local_infra: WeirConfig) -> None:
    kinesis = aws_client(
        local_infra, "kinesis", endpoint_url=local_infra.sources.kinesis.endpoint_url
    )
    shards = kinesis.list_shards(StreamName=local_infra.sources.kinesis.stream)["Shards"]
    assert len(shards) == local_infra.sources.kinesis.shards == 2


def test_put_and_get_records_across_both_shards(local_infra: WeirConfig) -> None:
    kinesis = aws_client(
        local_infra, "kinesis", endpoint_url=local_infra.sources.kinesis.endpoint_url
    )
    stream = f"put-get-{uuid.uuid4().hex[:8]}"  # its own stream: the telemetry one is shared
    kinesis.create_stream(StreamName=stream, ShardCount=local_infra.sources.kinesis.shards)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=stream, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )

    sent = {f"device-{n}": f'{{"event_id": "e{n}", "device_id": "device-{n}"}}' for n in range(40)}
    records = [{"Data": data.encode(), "PartitionKey": key} for key, data in sent.items()]
    put = kinesis.put_records(StreamName=stream, Records=records)
    assert put["FailedRecordCount"] == 0
    shard_of = {key: r["ShardId"] for key, r in zip(sent, put["Records"])}

    received = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for record in kinesis.get_records(ShardIterator=iterator, Limit=1000)["Records"]:
            received[record["PartitionKey"]] = (record["Data"].decode(), shard["ShardId"])

    assert {key: data for key, (data, _) in received.items()} == sent
    assert {key: shard for key, (_, shard) in received.items()} == shard_of
    assert len(set(shard_of.values())) == 2, "40 keys should hash onto both shards"


def test_s3_glue_and_emr_answer_through_the_one_endpoint(local_infra: WeirConfig) -> None:
    s3 = aws_client(local_infra, "s3")
    bucket = f"weir-test-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="raw/part-0.json", Body=b"{}")
    assert s3.get_object(Bucket=bucket, Key="raw/part-0.json")["Body"].read() == b"{}"

    glue = aws_client(local_infra, "glue")
    database = f"weir_test_{uuid.uuid4().hex[:8]}"
    glue.create_database(DatabaseInput={"Name": database})
    assert glue.get_database(Name=database)["Database"]["Name"] == database

    # The endpoint is shared by the session's tests, so look for this test's own cluster.
    emr = aws_client(local_infra, "emr")
    cluster = emr.run_job_flow(
        Name=f"weir-endpoint-{uuid.uuid4().hex[:8]}",
        ReleaseLabel="emr-7.12.0",
        Instances={"InstanceCount": 1, "MasterInstanceType": "m5.xlarge"},
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )["JobFlowId"]
    assert cluster in {c["Id"] for c in emr.list_clusters()["Clusters"]}
    emr.terminate_job_flows(JobFlowIds=[cluster])
    assert "applications" in aws_client(local_infra, "emr-serverless").list_applications()


def test_lake_bucket_is_created_when_the_lake_is_on_s3(local_infra: WeirConfig) -> None:
    document = local_infra.model_dump()
    bucket = f"weir-lake-{uuid.uuid4().hex[:8]}"
    document["lake"] = {"root": f"s3://{bucket}/lake", "landing": None}
    on_s3 = config_from_mapping(document, environ={})

    endpoint = AwsEndpoint(on_s3)
    assert f"s3 bucket {bucket} (created)" in endpoint.ensure_resources()
    assert f"s3 bucket {bucket} (exists)" in endpoint.ensure_resources()
    buckets = {b["Name"] for b in aws_client(on_s3, "s3").list_buckets()["Buckets"]}
    assert bucket in buckets
