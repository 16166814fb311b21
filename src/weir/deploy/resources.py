"""The AWS resources Weir runs on, defined once: IAM policies, a CloudFormation template and the
QuickSight data source and dataset (docs/deploy.md).

Everything is written with CloudFormation ``${Name}`` placeholders: a template parameter
(``${BucketName}``) or a pseudo parameter (``${AWS::AccountId}``). The same policy documents
go into the template (as ``Fn::Sub``) and into ``deploy/iam/*.json``; :func:`stack_parameters`
gives every parameter its value from the configuration, so a name is configured in one place,
and :func:`render` fills the placeholders for one account (`weir emr render`).

``deploy/`` is generated from this module (`python -m weir.deploy.resources deploy`); a test
checks the committed files are current.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

import yaml

from weir.config import ConfigError, WeirConfig
from weir.lake import LakeLayout
from weir.schemas import MINUTE_SCHEMA

# CloudFormation parameters: name -> (description, config key it comes from).
PARAMETERS: dict[str, tuple[str, str]] = {
    "BucketName": ("S3 bucket of the lake, the code and the logs", "lake.root"),
    "LakePrefix": ("Prefix of the lake under the bucket (no slashes at the ends)", "lake.root"),
    "LandingPrefix": ("Prefix a Firehose delivery stream writes JSON lines to", "lake.landing"),
    "DatabaseName": ("Glue database of Weir's tables", "catalog.database"),
    "KinesisStream": ("Kinesis data stream of the devices", "sources.kinesis.stream"),
    "KinesisShards": ("Shards of the Kinesis stream", "sources.kinesis.shards"),
    "KafkaTopic": ("Kafka topic of the devices on MSK", "sources.kafka.topic"),
    "MskCluster": ("MSK cluster name; empty when the devices send to Kinesis", "emr.msk_cluster"),
    "LockTable": ("DynamoDB table of Delta's S3 multi-cluster writes", "emr.delta_lock_table"),
    "ReleaseLabel": ("EMR release of the EMR Serverless application", "emr.release_label"),
}
# What the stack creates and the deployment then configures (conf/emr.yaml's variables).
OUTPUTS: dict[str, tuple[str, str]] = {
    "ApplicationId": ("EmrApplication", "WEIR_EMR_APPLICATION_ID for conf/emr.yaml"),
    "JobRoleArn": ("JobRole", "WEIR_EMR_ROLE_ARN for conf/emr.yaml"),
    "KmsKeyArn": ("LakeKey", "WEIR_KMS_KEY_ID for conf/emr.yaml"),
    "SubmitPolicyArn": ("SubmitPolicy", "the policy to attach to a submitter"),
}
PSEUDO = ("AWS::AccountId", "AWS::Partition", "AWS::Region")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9:.]+)\}")
HAS_MSK = "HasMsk"

QUICKSIGHT_DATA_SOURCE_ID = "weir-athena"
QUICKSIGHT_DATASET_ID = "weir-telemetry-minute"
ATHENA_WORKGROUP = "primary"
UNIFIED_TABLE = "telemetry_minute"
_QUICKSIGHT_TYPES = {
    "string": "STRING",
    "bigint": "INTEGER",
    "int": "INTEGER",
    "double": "DECIMAL",
    "timestamp": "DATETIME",
    "date": "DATETIME",
    "boolean": "BIT",
}

_S3 = "arn:${AWS::Partition}:s3:::${BucketName}"
_LAKE_OBJECTS = f"{_S3}/${{LakePrefix}}/*"
_KEY_ARN = "${LakeKeyArn}"


# --- Values from the configuration --------------------------------------------------------------


def _bucket_and_prefix(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.strip("/")


def stack_parameters(config: WeirConfig) -> dict[str, str]:
    """Every template parameter's value, from the configuration (ConfigError if it cannot be)."""
    lake = LakeLayout.from_config(config)
    if not lake.root.startswith(("s3://", "s3a://")):
        raise ConfigError(
            "lake.root", f"{lake.root} is not on S3; AWS resources need an s3:// lake"
        )
    bucket, prefix = _bucket_and_prefix(lake.root)
    landing_bucket, landing = _bucket_and_prefix(lake.landing)
    if landing_bucket != bucket:
        raise ConfigError("lake.landing", f"must be in the lake's bucket {bucket}")
    if not config.emr.delta_lock_table:
        raise ConfigError("emr.delta_lock_table", "required for the stack's DynamoDB table")
    return {
        "BucketName": bucket,
        "LakePrefix": prefix,
        "LandingPrefix": landing,
        "DatabaseName": config.catalog.database,
        "KinesisStream": config.sources.kinesis.stream,
        "KinesisShards": str(config.sources.kinesis.shards),
        "KafkaTopic": config.sources.kafka.topic,
        "MskCluster": config.emr.msk_cluster or "",
        "LockTable": config.emr.delta_lock_table,
        "ReleaseLabel": config.emr.release_label,
    }


# --- IAM policies -----------------------------------------------------------------------------


def _statement(sid: str, actions: list[str], resources: list[str], **extra: Any) -> dict:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources, **extra}


def job_policy() -> dict[str, Any]:
    """What a Weir job may do: the lake prefix, the Glue database, the sources, the lock table."""
    glue = "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}"
    kinesis = (
        "arn:${AWS::Partition}:kinesis:${AWS::Region}:${AWS::AccountId}:stream/${KinesisStream}"
    )
    kafka = "arn:${AWS::Partition}:kafka:${AWS::Region}:${AWS::AccountId}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            _statement(
                "ListLakeAndLanding",
                ["s3:ListBucket"],
                [_S3],
                Condition={"StringLike": {"s3:prefix": ["${LakePrefix}/*", "${LandingPrefix}/*"]}},
            ),
            _statement(
                "ReadWriteLake",
                ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                [_LAKE_OBJECTS],
            ),
            _statement("ReadLanding", ["s3:GetObject"], [f"{_S3}/${{LandingPrefix}}/*"]),
            _statement(
                "EncryptWithTheLakeKey",
                ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
                [_KEY_ARN],
            ),
            _statement(
                "CatalogTables",
                [
                    "glue:GetDatabase",
                    "glue:CreateDatabase",
                    "glue:GetTable",
                    "glue:GetTables",
                    "glue:CreateTable",
                    "glue:UpdateTable",
                    "glue:GetPartitions",
                ],
                [
                    f"{glue}:catalog",
                    f"{glue}:database/${{DatabaseName}}",
                    f"{glue}:table/${{DatabaseName}}/*",
                ],
            ),
            _statement(
                "ReadKinesis",
                [
                    "kinesis:DescribeStream",
                    "kinesis:DescribeStreamSummary",
                    "kinesis:GetRecords",
                    "kinesis:GetShardIterator",
                    "kinesis:ListShards",
                    "kinesis:SubscribeToShard",
                    "kinesis:DescribeStreamConsumer",
                    "kinesis:RegisterStreamConsumer",
                ],
                [kinesis, f"{kinesis}/consumer/*"],
            ),
            _statement(
                "ReadMsk",
                [
                    "kafka-cluster:Connect",
                    "kafka-cluster:DescribeCluster",
                    "kafka-cluster:DescribeTopic",
                    "kafka-cluster:ReadData",
                    "kafka-cluster:DescribeGroup",
                    "kafka-cluster:AlterGroup",
                ],
                [
                    f"{kafka}:cluster/${{MskCluster}}/*",
                    f"{kafka}:topic/${{MskCluster}}/*/${{KafkaTopic}}",
                    # Spark's Kafka source names its consumer groups spark-kafka-source-…
                    f"{kafka}:group/${{MskCluster}}/*/spark-kafka-source-*",
                ],
            ),
            _statement(
                "DeltaCommitLocks",
                [
                    "dynamodb:DescribeTable",
                    "dynamodb:GetItem",
                    "dynamodb:PutItem",
                    "dynamodb:Query",
                ],
                [
                    "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}"
                    ":table/${LockTable}"
                ],
            ),
        ],
    }


def submit_policy() -> dict[str, Any]:
    """What `weir emr submit` / `weir emr status` / `weir emr schedule` and the DAGs need: the
    code prefix, the application, the job role to pass on, the cluster's steps."""
    serverless = (
        "arn:${AWS::Partition}:emr-serverless:${AWS::Region}:${AWS::AccountId}"
        ":/applications/${ApplicationId}"
    )
    return {
        "Version": "2012-10-17",
        "Statement": [
            _statement(
                "ListCode",
                ["s3:ListBucket"],
                [_S3],
                Condition={"StringLike": {"s3:prefix": ["${LakePrefix}/code/*"]}},
            ),
            _statement(
                "UploadPackage",
                ["s3:GetObject", "s3:PutObject"],
                [f"{_S3}/${{LakePrefix}}/code/*"],
            ),
            # Decrypt: reading back the manifest of an upload and the schedule's job runs.
            _statement(
                "PackageKey", ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"], [_KEY_ARN]
            ),
            _statement(
                "RunJobs",
                [
                    "emr-serverless:GetApplication",
                    "emr-serverless:StartJobRun",
                    "emr-serverless:GetJobRun",
                ],
                [serverless, f"{serverless}/jobruns/*"],
            ),
            # The DAGs (dags/weir_pipeline.py): a stopped application is started before a job
            # run, and the stream's runs are looked up.
            _statement(
                "ScheduleJobs",
                ["emr-serverless:StartApplication", "emr-serverless:ListJobRuns"],
                [serverless],
            ),
            _statement(
                "PassTheJobRole",
                ["iam:PassRole"],
                ["${JobRoleArn}"],
                Condition={"StringEquals": {"iam:PassedToService": "emr-serverless.amazonaws.com"}},
            ),
            _statement(
                "AddSteps",
                [
                    "elasticmapreduce:DescribeCluster",
                    "elasticmapreduce:AddJobFlowSteps",
                    "elasticmapreduce:DescribeStep",
                ],
                [
                    "arn:${AWS::Partition}:elasticmapreduce:${AWS::Region}:${AWS::AccountId}"
                    ":cluster/${ClusterId}"
                ],
            ),
        ],
    }


POLICIES = {"weir-job": job_policy, "weir-submit": submit_policy}
# Placeholders the policies use that are not template parameters: the stack's own resources
# inside the template, the deployment's ids outside it.
POLICY_ONLY = {
    "LakeKeyArn": (
        "the lake's KMS key by ARN, not alias (the stack's KmsKeyArn output)",
        "emr.s3_kms_key_id",
    ),
    "ApplicationId": ("the EMR Serverless application", "emr.application_id"),
    "JobRoleArn": ("the job execution role", "emr.execution_role_arn"),
    "ClusterId": ("the EMR on EC2 cluster", "emr.cluster_id"),
}


# --- The CloudFormation template --------------------------------------------------------------


def _sub(value: Any) -> Any:
    """Strings with placeholders become ``Fn::Sub``, recursively."""
    if isinstance(value, dict):
        return {k: _sub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sub(v) for v in value]
    if isinstance(value, str) and _PLACEHOLDER.search(value):
        return {"Fn::Sub": value}
    return value


def _ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def _job_policy_in_template() -> dict[str, Any]:
    policy = job_policy()
    statements = []
    for statement in policy["Statement"]:
        text = json.dumps(statement).replace("${LakeKeyArn}", "${LakeKey.Arn}")
        item = _sub(json.loads(text))
        if statement["Sid"] == "ReadMsk":
            item = {"Fn::If": [HAS_MSK, item, _ref("AWS::NoValue")]}
        statements.append(item)
    return {"Version": policy["Version"], "Statement": statements}


def _submit_policy_in_template() -> dict[str, Any]:
    """:func:`submit_policy` for the stack's own application and role (no EC2 cluster)."""
    statements = [s for s in submit_policy()["Statement"] if s["Sid"] != "AddSteps"]
    text = (
        json.dumps(statements)
        .replace("${LakeKeyArn}", "${LakeKey.Arn}")
        .replace("${ApplicationId}", "${EmrApplication}")
        .replace("${JobRoleArn}", "${JobRole.Arn}")
    )
    return {"Version": "2012-10-17", "Statement": _sub(json.loads(text))}


def template() -> dict[str, Any]:
    """The CloudFormation template: KMS key, lake bucket (SSE-KMS, public access blocked, TLS
    only), Glue database, Kinesis stream, DynamoDB lock table, EMR Serverless application and
    the job role with :func:`job_policy`."""
    parameters = {
        name: {"Type": "String", "Description": description}
        for name, (description, _) in PARAMETERS.items()
    }
    parameters["KinesisShards"]["Type"] = "Number"
    parameters["MskCluster"]["Default"] = ""
    parameters["LakePrefix"]["AllowedPattern"] = "^[^/].*[^/]$"
    parameters["LandingPrefix"]["AllowedPattern"] = "^[^/].*[^/]$"
    parameters["ReleaseLabel"]["AllowedPattern"] = "^emr-7\\.\\d+\\.\\d+$"
    resources: dict[str, Any] = {
        "LakeKey": {
            "Type": "AWS::KMS::Key",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "Description": "Weir lake, stream and lock table encryption",
                "EnableKeyRotation": True,
                "KeyPolicy": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "AccountAdministersTheKey",
                            "Effect": "Allow",
                            "Principal": {
                                "AWS": {
                                    "Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"
                                }
                            },
                            "Action": "kms:*",
                            "Resource": "*",
                        }
                    ],
                },
            },
        },
        "LakeBucket": {
            "Type": "AWS::S3::Bucket",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "BucketName": _ref("BucketName"),
                "BucketEncryption": {
                    "ServerSideEncryptionConfiguration": [
                        {
                            "ServerSideEncryptionByDefault": {
                                "SSEAlgorithm": "aws:kms",
                                "KMSMasterKeyID": {"Fn::GetAtt": ["LakeKey", "Arn"]},
                            },
                            "BucketKeyEnabled": True,
                        }
                    ]
                },
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True,
                    "BlockPublicPolicy": True,
                    "IgnorePublicAcls": True,
                    "RestrictPublicBuckets": True,
                },
                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                "VersioningConfiguration": {"Status": "Enabled"},
            },
        },
        "LakeBucketPolicy": {
            "Type": "AWS::S3::BucketPolicy",
            "Properties": {
                "Bucket": _ref("LakeBucket"),
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "TlsOnly",
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "s3:*",
                            "Resource": _sub([_S3, f"{_S3}/*"]),
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        }
                    ],
                },
            },
        },
        "GlueDatabase": {
            "Type": "AWS::Glue::Database",
            "Properties": {
                "CatalogId": _ref("AWS::AccountId"),
                "DatabaseInput": {
                    "Name": _ref("DatabaseName"),
                    "Description": "Weir telemetry (Delta Lake tables)",
                },
            },
        },
        "TelemetryStream": {
            "Type": "AWS::Kinesis::Stream",
            "Properties": {
                "Name": _ref("KinesisStream"),
                "ShardCount": _ref("KinesisShards"),
                "StreamEncryption": {
                    "EncryptionType": "KMS",
                    "KeyId": {"Fn::GetAtt": ["LakeKey", "Arn"]},
                },
            },
        },
        "DeltaLockTable": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "TableName": _ref("LockTable"),
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [
                    {"AttributeName": "tablePath", "AttributeType": "S"},
                    {"AttributeName": "fileName", "AttributeType": "S"},
                ],
                "KeySchema": [
                    {"AttributeName": "tablePath", "KeyType": "HASH"},
                    {"AttributeName": "fileName", "KeyType": "RANGE"},
                ],
                # Delta's LogStore sets expireTime on finished entries (one day later).
                "TimeToLiveSpecification": {"AttributeName": "expireTime", "Enabled": True},
                "SSESpecification": {
                    "SSEEnabled": True,
                    "SSEType": "KMS",
                    "KMSMasterKeyId": {"Fn::GetAtt": ["LakeKey", "Arn"]},
                },
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            },
        },
        "EmrApplication": {
            "Type": "AWS::EMRServerless::Application",
            "Properties": {
                "Name": {"Fn::Sub": "weir-${LakePrefix}"},
                "Type": "SPARK",
                "ReleaseLabel": _ref("ReleaseLabel"),
                "Architecture": "X86_64",
                "AutoStartConfiguration": {"Enabled": True},
                "AutoStopConfiguration": {"Enabled": True, "IdleTimeoutMinutes": 15},
            },
        },
        "JobRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Description": "Weir's Spark jobs on EMR Serverless",
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "emr-serverless.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                },
                "Policies": [
                    {"PolicyName": "weir-job", "PolicyDocument": _job_policy_in_template()}
                ],
            },
        },
        "SubmitPolicy": {
            "Type": "AWS::IAM::ManagedPolicy",
            "Properties": {
                "Description": "Attach to whoever runs `weir emr submit` (a person or a scheduler)",
                "PolicyDocument": _submit_policy_in_template(),
            },
        },
    }
    outputs = {
        name: {
            "Description": variable,
            "Value": _ref(resource)
            if name in ("ApplicationId", "SubmitPolicyArn")
            else {"Fn::GetAtt": [resource, "Arn"]},
        }
        for name, (resource, variable) in OUTPUTS.items()
    }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "Weir on Amazon EMR Serverless: lake bucket, catalog, stream, locks, "
        "application and job role (docs/deploy.md)",
        "Parameters": parameters,
        "Conditions": {HAS_MSK: {"Fn::Not": [{"Fn::Equals": [_ref("MskCluster"), ""]}]}},
        "Resources": resources,
        "Outputs": outputs,
    }


# --- QuickSight -----------------------------------------------------------------------------


def quicksight_type(hive_type: str) -> str:
    """The QuickSight input column type of a Glue/Hive type."""
    try:
        return _QUICKSIGHT_TYPES[hive_type]
    except KeyError:
        raise ValueError(f"no QuickSight type for {hive_type}") from None


def quicksight_data_source() -> dict[str, Any]:
    """``aws quicksight create-data-source --cli-input-json``: Athena in its primary workgroup."""
    return {
        "AwsAccountId": "${AWS::AccountId}",
        "DataSourceId": QUICKSIGHT_DATA_SOURCE_ID,
        "Name": "Weir (Athena)",
        "Type": "ATHENA",
        "DataSourceParameters": {"AthenaParameters": {"WorkGroup": ATHENA_WORKGROUP}},
    }


def quicksight_dataset() -> dict[str, Any]:
    """``aws quicksight create-data-set --cli-input-json``: the unified table, its columns
    generated from ``weir.schemas.MINUTE_SCHEMA`` (direct query: Athena reads the Delta log)."""
    from weir.catalog import hive_type

    columns = [
        {"Name": field.name, "Type": quicksight_type(hive_type(field.dataType))}
        for field in MINUTE_SCHEMA.fields
    ]
    return {
        "AwsAccountId": "${AWS::AccountId}",
        "DataSetId": QUICKSIGHT_DATASET_ID,
        "Name": "Weir telemetry per device-minute",
        "ImportMode": "DIRECT_QUERY",
        "PhysicalTableMap": {
            "telemetry-minute": {
                "RelationalTable": {
                    "DataSourceArn": "arn:${AWS::Partition}:quicksight:${AWS::Region}:"
                    f"${{AWS::AccountId}}:datasource/{QUICKSIGHT_DATA_SOURCE_ID}",
                    "Catalog": "AwsDataCatalog",
                    "Schema": "${DatabaseName}",
                    "Name": UNIFIED_TABLE,
                    "InputColumns": columns,
                }
            }
        },
    }


# --- Files and rendering -----------------------------------------------------------------------


def _json(document: Any) -> str:
    return json.dumps(document, indent=2) + "\n"


def deploy_files() -> dict[str, str]:
    """The generic files of ``deploy/`` (placeholders unfilled), by path."""
    header = (
        "# Generated from src/weir/deploy/resources.py (python -m weir.deploy.resources deploy):\n"
        "# edit that module, not this file. Values: `weir emr render` (docs/deploy.md).\n"
    )
    return {
        "cloudformation/weir.yaml": header + yaml.safe_dump(template(), sort_keys=False, width=100),
        **{f"iam/{name}-policy.json": _json(make()) for name, make in POLICIES.items()},
        "quicksight/data-source.json": _json(quicksight_data_source()),
        "quicksight/data-set.json": _json(quicksight_dataset()),
    }


def placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


def deployment_values(config: WeirConfig, account_id: str) -> dict[str, str]:
    """Every placeholder's value for one account: parameters, ids and pseudo parameters."""
    if not re.fullmatch(r"\d{12}", account_id):
        raise ConfigError("--account", f"{account_id!r} is not a 12-digit AWS account id")
    values = stack_parameters(config)
    partition = "aws-cn" if config.aws.region.startswith("cn-") else "aws"
    values.update(
        {
            "AWS::AccountId": account_id,
            "AWS::Partition": partition,
            "AWS::Region": config.aws.region,
        }
    )
    ids = {
        "ApplicationId": config.emr.application_id,
        "JobRoleArn": config.emr.execution_role_arn,
        "ClusterId": config.emr.cluster_id,
        "LakeKeyArn": _key_arn(config, partition, account_id),
    }
    values.update({name: value for name, value in ids.items() if value})
    return values


def _key_arn(config: WeirConfig, partition: str, account_id: str) -> Optional[str]:
    """The KMS key's ARN, or None for an alias: IAM grants on a key name it by ARN."""
    key = config.emr.s3_kms_key_id
    if key is None or key.startswith("alias/") or ":alias/" in key:
        return None
    if key.startswith("arn:"):
        return key
    return f"arn:{partition}:kms:{config.aws.region}:{account_id}:key/{key}"


def render(text: str, values: dict[str, str]) -> str:
    """``text`` with every placeholder filled; ConfigError naming the first that has no value."""
    missing = sorted(placeholders(text) - set(values))
    if missing:
        name = missing[0]
        description, key = {**PARAMETERS, **POLICY_ONLY}.get(name, (name, name))
        raise ConfigError(key, f"needed for ${{{name}}}: {description}")
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def write_deploy_files(folder: Path) -> list[Path]:
    written = []
    for relative, text in deploy_files().items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_deploy_files(Path(sys.argv[1] if len(sys.argv) > 1 else "deploy")):
        print(path)
