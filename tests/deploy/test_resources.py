"""deploy/: IAM policies, the CloudFormation template and QuickSight definitions, generated from
one module and the one schema, checked by their linters (cfn-lint, parliament)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from weir.cli import main
from weir.config import ConfigError, WeirConfig, load_config
from weir.deploy.resources import (
    PARAMETERS,
    POLICY_ONLY,
    PSEUDO,
    deploy_files,
    deployment_values,
    placeholders,
    render,
    stack_parameters,
    template,
)
from weir.schemas import MINUTE_SCHEMA

from .conftest import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
ACCOUNT = "123456789012"
KEY_ARN = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ENVIRON = {
    "WEIR_BUCKET": "acme-telemetry",
    "WEIR_PREFIX": "prod/weir",
    "WEIR_EMR_APPLICATION_ID": "00fabcdefgh12345",
    "WEIR_EMR_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/weir-job",
    "WEIR_EMR_CLUSTER_ID": "j-2AXXXXXXGAPLF",
    "WEIR_MSK_CLUSTER": "weir-msk",
    "WEIR_KMS_KEY_ID": KEY_ARN,
}


@pytest.fixture
def emr_config() -> WeirConfig:
    return load_config(str(PROJECT_ROOT / "conf" / "emr.yaml"), environ=ENVIRON)


def rendered_policy(name: str, config: WeirConfig) -> dict[str, Any]:
    text = deploy_files()[f"iam/{name}-policy.json"]
    return json.loads(render(text, deployment_values(config, ACCOUNT)))


def resources_of(policy: dict[str, Any]) -> set[str]:
    return {resource for s in policy["Statement"] for resource in s["Resource"]}


def test_deploy_folder_is_what_the_resources_module_generates() -> None:
    on_disk = {
        p.relative_to(DEPLOY).as_posix(): p.read_text("utf-8")
        for p in DEPLOY.rglob("*")
        if p.is_file()
    }
    assert on_disk == deploy_files(), "run `python -m weir.deploy.resources deploy`"


def test_template_passes_cfn_lint() -> None:
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "cfn-lint"),
            str(DEPLOY / "cloudformation" / "weir.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""


def test_template_parameters_are_exactly_the_configured_ones(emr_config: WeirConfig) -> None:
    stack = template()
    assert set(stack["Parameters"]) == set(PARAMETERS) == set(stack_parameters(emr_config))
    assert stack_parameters(emr_config) == {
        "BucketName": "acme-telemetry",
        "LakePrefix": "prod/weir",
        "LandingPrefix": "firehose/telemetry",
        "DatabaseName": "weir",
        "KinesisStream": "telemetry",
        "KinesisShards": "8",
        "KafkaTopic": "telemetry",
        "MskCluster": "weir-msk",
        "LockTable": "weir_delta_log",
        "ReleaseLabel": "emr-7.12.0",
    }


def test_every_name_in_the_template_comes_from_a_parameter() -> None:
    stack = template()
    resources = stack["Resources"]
    named = {
        "LakeBucket": resources["LakeBucket"]["Properties"]["BucketName"],
        "GlueDatabase": resources["GlueDatabase"]["Properties"]["DatabaseInput"]["Name"],
        "TelemetryStream": resources["TelemetryStream"]["Properties"]["Name"],
        "DeltaLockTable": resources["DeltaLockTable"]["Properties"]["TableName"],
    }
    assert named == {
        "LakeBucket": {"Ref": "BucketName"},
        "GlueDatabase": {"Ref": "DatabaseName"},
        "TelemetryStream": {"Ref": "KinesisStream"},
        "DeltaLockTable": {"Ref": "LockTable"},
    }
    text = json.dumps(stack)
    own = {"LakeKey.Arn", "JobRole.Arn", "EmrApplication"}
    assert placeholders(text) <= set(PARAMETERS) | set(PSEUDO) | own


def test_bucket_is_kms_encrypted_private_and_tls_only() -> None:
    resources = template()["Resources"]
    bucket = resources["LakeBucket"]["Properties"]
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": ["LakeKey", "Arn"]},
    }
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    (deny,) = resources["LakeBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert (deny["Effect"], deny["Condition"]) == (
        "Deny",
        {"Bool": {"aws:SecureTransport": "false"}},
    )


@pytest.mark.parametrize("name", ["weir-job", "weir-submit"])
def test_policies_pass_parliament(name: str, emr_config: WeirConfig) -> None:
    from parliament import analyze_policy_string

    policy = json.dumps(rendered_policy(name, emr_config))
    assert analyze_policy_string(policy).findings == []
    community = analyze_policy_string(policy, include_community_auditors=True).findings
    # Passing the job role to EMR Serverless is what submitting a job run is.
    expected = {
        "weir-job": [],
        "weir-submit": [("PERMISSIONS_MANAGEMENT_ACTIONS", ["iam:passrole"])],
    }
    assert [(f.issue, f.location.get("actions")) for f in community] == expected[name]


def test_policies_use_only_configured_names(emr_config: WeirConfig) -> None:
    for name in ("weir-job", "weir-submit"):
        text = deploy_files()[f"iam/{name}-policy.json"]
        assert placeholders(text) <= set(PARAMETERS) | set(POLICY_ONLY) | set(PSEUDO)
        for statement in json.loads(text)["Statement"]:
            assert "*" not in statement["Resource"], statement["Sid"]

    arn = f"us-east-1:{ACCOUNT}"
    assert resources_of(rendered_policy("weir-job", emr_config)) == {
        "arn:aws:s3:::acme-telemetry",
        "arn:aws:s3:::acme-telemetry/prod/weir/*",
        "arn:aws:s3:::acme-telemetry/firehose/telemetry/*",
        KEY_ARN,
        f"arn:aws:glue:{arn}:catalog",
        f"arn:aws:glue:{arn}:database/weir",
        f"arn:aws:glue:{arn}:table/weir/*",
        f"arn:aws:kinesis:{arn}:stream/telemetry",
        f"arn:aws:kinesis:{arn}:stream/telemetry/consumer/*",
        f"arn:aws:kafka:{arn}:cluster/weir-msk/*",
        f"arn:aws:kafka:{arn}:topic/weir-msk/*/telemetry",
        f"arn:aws:kafka:{arn}:group/weir-msk/*/spark-kafka-source-*",
        f"arn:aws:dynamodb:{arn}:table/weir_delta_log",
    }
    assert resources_of(rendered_policy("weir-submit", emr_config)) == {
        "arn:aws:s3:::acme-telemetry",
        "arn:aws:s3:::acme-telemetry/prod/weir/code/*",
        KEY_ARN,
        f"arn:aws:emr-serverless:{arn}:/applications/00fabcdefgh12345",
        f"arn:aws:emr-serverless:{arn}:/applications/00fabcdefgh12345/jobruns/*",
        f"arn:aws:iam::{ACCOUNT}:role/weir-job",
        f"arn:aws:elasticmapreduce:{arn}:cluster/j-2AXXXXXXGAPLF",
    }


def test_code_and_lake_prefixes_of_the_policies_are_the_configured_ones(
    emr_config: WeirConfig,
) -> None:
    code = str(emr_config.emr.code_uri).removeprefix("s3://")
    assert f"arn:aws:s3:::{code}/*" in resources_of(rendered_policy("weir-submit", emr_config))


def test_rendering_names_the_key_it_lacks(emr_config: WeirConfig) -> None:
    text = deploy_files()["iam/weir-submit-policy.json"]
    values = deployment_values(
        emr_config.model_copy(
            update={"emr": emr_config.emr.model_copy(update={"application_id": None})}
        ),
        ACCOUNT,
    )
    with pytest.raises(ConfigError) as missing:
        render(text, values)
    assert missing.value.key == "emr.application_id"
    alias = emr_config.model_copy(
        update={"emr": emr_config.emr.model_copy(update={"s3_kms_key_id": "alias/weir"})}
    )
    job_policy = deploy_files()["iam/weir-job-policy.json"]
    with pytest.raises(ConfigError, match="by ARN, not alias") as aliased:
        render(job_policy, deployment_values(alias, ACCOUNT))
    assert aliased.value.key == "emr.s3_kms_key_id"
    with pytest.raises(ConfigError, match="12-digit"):
        deployment_values(emr_config, "12345")


def test_quicksight_dataset_columns_are_the_minute_schema() -> None:
    dataset = json.loads(deploy_files()["quicksight/data-set.json"])
    (table,) = dataset["PhysicalTableMap"].values()
    columns = table["RelationalTable"]["InputColumns"]
    assert [c["Name"] for c in columns] == MINUTE_SCHEMA.fieldNames()
    types = {c["Name"]: c["Type"] for c in columns}
    assert (types["device_id"], types["window_start"], types["event_date"]) == (
        "STRING",
        "DATETIME",
        "DATETIME",
    )
    assert (types["event_count"], types["temperature_c_avg"]) == ("INTEGER", "DECIMAL")
    assert table["RelationalTable"]["Name"] == "telemetry_minute"
    assert table["RelationalTable"]["Schema"] == "${DatabaseName}"


def test_emr_render_fills_every_placeholder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    conf = str(PROJECT_ROOT / "conf" / "emr.yaml")

    code = main(["emr", "render", "--account", ACCOUNT, "--conf", conf, "--out", str(tmp_path)])

    assert code == 0, capsys.readouterr().err
    written = {p.relative_to(tmp_path).as_posix(): p.read_text() for p in tmp_path.rglob("*.json")}
    assert set(written) == {
        "iam/weir-job-policy.json",
        "iam/weir-submit-policy.json",
        "quicksight/data-source.json",
        "quicksight/data-set.json",
        "cloudformation/parameters.json",
    }
    assert not [path for path, text in written.items() if "${" in text]
    assert "BucketName=acme-telemetry" in json.loads(written["cloudformation/parameters.json"])
    dataset = json.loads(written["quicksight/data-set.json"])
    assert dataset["AwsAccountId"] == ACCOUNT
    yaml.safe_load(written["quicksight/data-source.json"])
