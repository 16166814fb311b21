"""The typed configuration: both shipped files load, overrides and interpolation behave, and
every kind of bad configuration stops the CLI with exit code 2, the key named and nothing written
(docs/contract.md, docs/configuration.md)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Optional, get_args

import pytest
import yaml
from pydantic import BaseModel

from weir.cli import main
from weir.config import (
    ConfigError,
    TimingConfig,
    WeirConfig,
    config_from_mapping,
    load_config,
)
from weir.errors import EXIT_BAD_CONFIG

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOCAL_CONF = PROJECT_ROOT / "conf" / "local.yaml"
EMR_CONF = PROJECT_ROOT / "conf" / "emr.yaml"
JARS_DIR = PROJECT_ROOT / ".jars" / "spark"


@pytest.fixture(autouse=True)
def _no_weir_overrides_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's WEIR__* variables must not change what these tests load."""
    import os

    for name in list(os.environ):
        if name.startswith("WEIR__"):
            monkeypatch.delenv(name)


def local_document() -> dict[str, Any]:
    return yaml.safe_load(LOCAL_CONF.read_text("utf-8"))


def load_local(environ: Optional[dict[str, str]] = None, **changes: Any) -> WeirConfig:
    document = local_document()
    document.update(changes)
    return config_from_mapping(document, environ=environ or {})


# --- the shipped files ----------------------------------------------------------------------


def test_local_config_loads_with_local_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    config = load_config(str(LOCAL_CONF), environ={})
    assert config.env == "local"
    assert config.lake.root == f"file://{PROJECT_ROOT}/.lake"
    assert config.lake.landing is None
    assert config.spark.master == "local[2]"
    assert config.spark.jars_dir == str(JARS_DIR)
    assert config.catalog.kind == "spark"
    assert config.aws.endpoint_url == "http://127.0.0.1:5055"
    assert config.sources.kafka.bootstrap_servers == "127.0.0.1:9092"


def test_the_archiver_runs_on_the_speed_trigger_unless_given_its_own() -> None:
    assert TimingConfig(trigger_interval_seconds=5).archive_trigger == 5
    own = TimingConfig(trigger_interval_seconds=5, archive_trigger_seconds=30)
    assert own.archive_trigger == 30


def test_emr_config_loads_with_the_bucket_from_the_environment() -> None:
    config = load_config(str(EMR_CONF), environ={"WEIR_BUCKET": "acme-telemetry"})
    assert config.env == "emr"
    assert config.lake.root == "s3://acme-telemetry/weir"
    assert config.lake.landing == "s3://acme-telemetry/firehose/telemetry"
    assert config.spark.master is None
    assert config.spark.jars_dir is None
    assert config.aws.endpoint_url is None
    assert config.catalog.kind == "glue"
    assert config.sources.kafka.security.sasl_mechanism == "AWS_MSK_IAM"
    assert config.emr.code_uri == "s3://acme-telemetry/weir/code"


def test_emr_config_takes_region_and_prefix_from_the_environment() -> None:
    environ = {"WEIR_BUCKET": "acme", "WEIR_PREFIX": "prod/weir", "AWS_REGION": "eu-west-1"}
    config = load_config(str(EMR_CONF), environ=environ)
    assert config.lake.root == "s3://acme/prod/weir"
    assert config.aws.region == "eu-west-1"
    assert config.sources.kinesis.endpoint_url == "https://kinesis.eu-west-1.amazonaws.com"


def test_emr_ids_left_unset_in_the_environment_are_null() -> None:
    config = load_config(str(EMR_CONF), environ={"WEIR_BUCKET": "acme"})
    assert config.emr.application_id is None
    assert config.emr.execution_role_arn is None


def test_emr_config_without_its_bucket_names_the_key() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(str(EMR_CONF), environ={})
    assert raised.value.key == "lake.root"
    assert "WEIR_BUCKET" in str(raised.value)


# --- WEIR__SECTION__KEY overrides -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "read", "expected"),
    [
        ("WEIR__SPARK__SHUFFLE_PARTITIONS", "8", lambda c: c.spark.shuffle_partitions, 8),
        (
            "WEIR__SOURCES__KAFKA__FAIL_ON_DATA_LOSS",
            "false",
            lambda c: c.sources.kafka.fail_on_data_loss,
            False,
        ),
        ("WEIR__SPARK__MASTER", "null", lambda c: c.spark.master, None),
        (
            "WEIR__DQ__CHECKS__QUARANTINE_RATIO__THRESHOLD",
            "0.2",
            lambda c: c.dq.checks.quarantine_ratio.threshold,
            0.2,
        ),
        ("WEIR__LAKE__ROOT", "s3://acme/weir", lambda c: c.lake.root, "s3://acme/weir"),
        (
            "WEIR__SOURCES__KAFKA__TOPIC",
            "telemetry-v2",
            lambda c: c.sources.kafka.topic,
            "telemetry-v2",
        ),
        ("WEIR__EMR__CODE_URI", "s3://acme/code", lambda c: c.emr.code_uri, "s3://acme/code"),
    ],
    ids=["int", "bool", "null", "float", "string", "nested", "absent-section"],
)
def test_environment_override_is_read_as_a_yaml_scalar(
    name: str, value: str, read: Callable[[WeirConfig], Any], expected: Any
) -> None:
    assert read(load_local()) != expected
    assert read(load_local({name: value})) == expected


def test_override_wins_over_the_file_and_leaves_siblings_alone() -> None:
    config = load_local({"WEIR__SPARK__SHUFFLE_PARTITIONS": "16"})
    assert config.spark.shuffle_partitions == 16
    assert config.spark.master == "local[2]"


# --- ${VAR} interpolation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("${BROKER}", {"BROKER": "kafka-1:9092"}, "kafka-1:9092"),
        ("${BROKER:-localhost:9092}", {}, "localhost:9092"),
        ("${BROKER:-localhost:9092}", {"BROKER": "kafka-1:9092"}, "kafka-1:9092"),
        ("${BROKER:-localhost:9092}", {"BROKER": ""}, "localhost:9092"),
        ("${HOST}:${PORT:-9092}", {"HOST": "kafka-2"}, "kafka-2:9092"),
    ],
    ids=["set", "default", "set-beats-default", "empty-takes-default", "two-in-one"],
)
def test_interpolation_expands_from_the_environment(
    text: str, environ: dict[str, str], expected: str
) -> None:
    document = local_document()
    document["sources"]["kafka"]["bootstrap_servers"] = text
    config = config_from_mapping(document, environ=environ)
    assert config.sources.kafka.bootstrap_servers == expected


def test_interpolation_yields_text_that_is_then_typed() -> None:
    document = local_document()
    document["spark"]["shuffle_partitions"] = "${PARTITIONS:-12}"
    assert config_from_mapping(document, environ={}).spark.shuffle_partitions == 12


def test_unset_variable_without_default_names_key_and_variable() -> None:
    document = local_document()
    document["sources"]["kafka"]["bootstrap_servers"] = "${MSK_BOOTSTRAP}"
    with pytest.raises(ConfigError) as raised:
        config_from_mapping(document, environ={})
    assert raised.value.key == "sources.kafka.bootstrap_servers"
    assert "MSK_BOOTSTRAP" in raised.value.message


# --- relative paths -------------------------------------------------------------------------


def test_relative_paths_are_made_absolute_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path.resolve()
    monkeypatch.chdir(here)
    config = load_local(lake={"root": "data/lake", "landing": "inbox"})
    assert config.lake.root == f"file://{here}/data/lake"
    assert config.lake.landing == f"file://{here}/inbox"
    assert config.spark.jars_dir == f"{here}/.jars/spark"
    assert config.infra.state_dir == f"{here}/.weir"


def test_default_state_dir_is_absolute_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """conf/emr.yaml has no infra section: the default .weir is resolved at load time."""
    here = tmp_path.resolve()
    monkeypatch.chdir(here)
    config = load_config(str(EMR_CONF), environ={"WEIR_BUCKET": "acme"})
    assert config.infra.state_dir == f"{here}/.weir"


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("s3://acme/weir/", "s3://acme/weir"),
        ("s3a://acme/weir", "s3a://acme/weir"),
        ("file:///srv/lake/", "file:///srv/lake"),
        ("/srv/lake", "file:///srv/lake"),
    ],
)
def test_lake_uris_are_kept_and_normalised(root: str, expected: str) -> None:
    assert load_local(lake={"root": root}).lake.root == expected


# --- bad configuration through the real CLI: exit 2, key named, nothing written -------------


def _set(path: str, value: Any) -> Callable[[dict], None]:
    *parents, leaf = path.split(".")

    def change(document: dict) -> None:
        node = document
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    return change


def _delete(path: str) -> Callable[[dict], None]:
    *parents, leaf = path.split(".")

    def change(document: dict) -> None:
        node = document
        for part in parents:
            node = node[part]
        del node[leaf]

    return change


def _no_change(document: dict) -> None:
    return None


# Each case: (change to the valid document, environment, raw file text or None, key named).
def bad_value(case: str, key: str, value: Any, named: Optional[str] = None) -> Any:
    """Set ``key`` to a bad ``value`` in the file; the error names ``named`` (default: key)."""
    return pytest.param(_set(key, value), {}, None, named or key, id=case)


def missing(case: str, key: str) -> Any:
    return pytest.param(_delete(key), {}, None, key, id=case)


def bad_environment(case: str, environ: dict[str, str], named: str) -> Any:
    return pytest.param(_no_change, environ, None, named, id=case)


def bad_file(case: str, text: str, named: str) -> Any:
    return pytest.param(_no_change, {}, text, named, id=case)


BAD_CONFIGURATIONS = [
    bad_value("unknown-top-level-key", "colour", "blue"),
    bad_value("unknown-nested-key", "sources.kafka.topik", "telemetry"),
    bad_value("unknown-env", "env", "prod"),
    bad_value("string-for-int", "spark.shuffle_partitions", "many"),
    bad_value("negative-shuffle-partitions", "spark.shuffle_partitions", -4),
    bad_value("bad-kafka-topic", "sources.kafka.topic", "tele metry"),
    bad_value("bootstrap-without-port", "sources.kafka.bootstrap_servers", "localhost"),
    bad_value("bootstrap-port-too-large", "sources.kafka.bootstrap_servers", "localhost:70000"),
    bad_value("bad-kafka-protocol", "sources.kafka.security.protocol", "TLS"),
    bad_value("bad-catalog-kind", "catalog.kind", "hive"),
    bad_value("bad-database-identifier", "catalog.database", "Weir-DB"),
    bad_value("hdfs-lake-root", "lake.root", "hdfs://namenode/lake"),
    bad_value("empty-lake-root", "lake.root", ""),
    bad_value("s3-root-without-bucket", "lake.root", "s3://"),
    bad_value("relative-file-uri", "lake.root", "file://lake"),
    bad_value("filesystem-root-lake", "lake.root", "file:///"),
    bad_value("bad-landing-scheme", "lake.landing", "ftp://host/in"),
    bad_value("lateness-over-a-day", "timing.allowed_lateness_minutes", 1441),
    bad_value("archive-trigger-zero", "timing.archive_trigger_seconds", 0),
    # conf/local.yaml triggers the speed query every 5 s: an archiver more often is refused.
    bad_value("archive-trigger-below-speed-trigger", "timing.archive_trigger_seconds", 4),
    bad_value("dq-ratio-over-one", "dq.checks.quarantine_ratio.threshold", 1.5),
    bad_value("dq-unknown-severity", "dq.checks.schema.severity", "fatal"),
    bad_value("dq-mostly-zero", "dq.checks.agreement.mostly", 0),
    bad_value("dq-unknown-gate", "dq.gate", "maybe"),
    bad_value("unknown-spark-master", "spark.master", "mesos://host:5050"),
    bad_value("spark-master-zero-threads", "spark.master", "local[0]"),
    bad_value("bad-driver-memory", "spark.driver_memory", "lots"),
    bad_value("non-spark-setting", "spark.settings", {"sql.shuffle.partitions": "4"}),
    bad_value("aws-endpoint-not-a-url", "aws.endpoint_url", "127.0.0.1:5055"),
    bad_value("kinesis-endpoint-not-a-url", "sources.kinesis.endpoint_url", "kinesis.local"),
    bad_value("privileged-infra-port", "infra.kafka_port", 80),
    bad_value("infra-ports-collide", "infra.aws_port", 9092, named="infra"),
    bad_value("unset-variable", "lake.root", "${WEIR_TEST_NEVER_SET}/lake"),
    missing("missing-section", "catalog"),
    missing("missing-required-key", "sources.kafka.topic"),
    bad_environment(
        "malformed-override", {"WEIR__SPARK____MASTER": "local[1]"}, "WEIR__SPARK____MASTER"
    ),
    bad_environment("override-unknown-key", {"WEIR__SPARK__NOPE": "1"}, "spark.nope"),
    bad_environment(
        "override-wrong-type", {"WEIR__SPARK__SHUFFLE_PARTITIONS": "x"}, "spark.shuffle_partitions"
    ),
    bad_environment(
        "override-not-yaml", {"WEIR__SOURCES__KAFKA__TOPIC": "[oops"}, "sources.kafka.topic"
    ),
    bad_environment("override-into-a-scalar", {"WEIR__ENV__NAME": "x"}, "env"),
    bad_file("yaml-not-a-mapping", "- env\n- lake\n", "--conf"),
    bad_file("yaml-syntax-error", "env: [local\n", "--conf"),
    bad_file("empty-file", "", "env"),
]


@pytest.fixture
def valid_document(tmp_path: Path) -> dict[str, Any]:
    """conf/local.yaml with every local path inside tmp_path (the lake must not appear)."""
    document = local_document()
    document["lake"] = {"root": str(tmp_path / "lake")}
    document["spark"]["jars_dir"] = str(JARS_DIR)
    document["infra"]["state_dir"] = str(tmp_path / "state")
    return document


@pytest.fixture
def demo_must_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop at the last check before Spark starts: a wrongly accepted configuration fails the
    test at once instead of running the whole demo (and writing) on a shared machine."""
    import weir.spark

    def refuse(config: WeirConfig, app_name: Optional[str] = None) -> None:
        weir.spark.spark_settings(config)  # the checks build_session makes before starting
        raise AssertionError("the configuration was accepted: the demo would start and write")

    monkeypatch.setattr(weir.spark, "build_session", refuse)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, " ".join(captured.out.split()), " ".join(captured.err.split())


def test_the_valid_document_is_valid(
    valid_document: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The control for the cases below: each fails for its own change, not for the base."""
    conf = tmp_path / "good.yaml"
    conf.write_text(yaml.safe_dump(valid_document), "utf-8")
    code, _, err = run_cli(["config", "check", "--conf", str(conf)], capsys)
    assert (code, err) == (0, "")
    assert not (tmp_path / "lake").exists()


@pytest.mark.parametrize(("change", "environ", "text", "key"), BAD_CONFIGURATIONS)
def test_bad_configuration_exits_2_names_the_key_and_writes_nothing(
    change: Callable[[dict], None],
    environ: dict[str, str],
    text: Optional[str],
    key: str,
    valid_document: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    demo_must_not_run: None,
) -> None:
    document = copy.deepcopy(valid_document)
    change(document)
    conf = tmp_path / "bad.yaml"
    conf.write_text(yaml.safe_dump(document) if text is None else text, "utf-8")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)

    code, _, err = run_cli(["demo", "--devices", "1", "--conf", str(conf)], capsys)

    assert code == EXIT_BAD_CONFIG, err
    assert f"{key}:" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_missing_conf_file_exits_2_and_names_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], demo_must_not_run: None
) -> None:
    missing = tmp_path / "nowhere.yaml"
    code, _, err = run_cli(["demo", "--conf", str(missing)], capsys)
    assert code == EXIT_BAD_CONFIG
    assert "--conf:" in err
    assert str(missing) in err
    assert list(tmp_path.iterdir()) == []


def test_jars_dir_without_jars_exits_2_before_spark_starts(
    valid_document: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    demo_must_not_run: None,
) -> None:
    empty = tmp_path / "jars"
    empty.mkdir()
    valid_document["spark"]["jars_dir"] = str(empty)
    conf = tmp_path / "bad.yaml"
    conf.write_text(yaml.safe_dump(valid_document), "utf-8")

    code, _, err = run_cli(["demo", "--devices", "1", "--conf", str(conf)], capsys)

    assert code == EXIT_BAD_CONFIG
    assert "spark.jars_dir:" in err
    assert "make setup" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "jars"]
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize("master", ["local[x]", "local[/]"])
def test_error_message_quotes_the_bad_value_verbatim(
    master: str,
    valid_document: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    demo_must_not_run: None,
) -> None:
    valid_document["spark"]["master"] = master
    conf = tmp_path / "bad.yaml"
    conf.write_text(yaml.safe_dump(valid_document), "utf-8")
    code, _, err = run_cli(["demo", "--conf", str(conf)], capsys)
    assert code == EXIT_BAD_CONFIG
    assert f"spark.master: {master!r}" in err


def test_config_check_names_every_problem_each_with_its_key(
    valid_document: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    valid_document["envv"] = valid_document.pop("env")  # a misspelt key: unknown, env missing
    valid_document["sources"]["kafka"]["topik"] = "telemetry"
    valid_document["spark"]["shuffle_partitions"] = "many"
    del valid_document["catalog"]
    conf = tmp_path / "bad.yaml"
    conf.write_text(yaml.safe_dump(valid_document), "utf-8")

    code, _, err = run_cli(["config", "check", "--conf", str(conf)], capsys)

    assert code == EXIT_BAD_CONFIG
    expected = {
        "env": "required key is missing",
        "envv": "unknown key",
        "sources.kafka.topik": "unknown key",
        "spark.shuffle_partitions": "Input should be a valid integer",
        "catalog": "required key is missing",
    }
    assert f"{len(expected)} problems" in err
    for key, message in expected.items():
        assert f"{key}: {message}" in err
    with pytest.raises(ConfigError) as raised:
        load_config(str(conf), environ={})
    assert sorted(key for key, _ in raised.value.problems) == sorted(expected)


def test_every_unset_variable_is_named_once(valid_document: dict[str, Any]) -> None:
    valid_document["lake"]["root"] = "${WEIR_TEST_NEVER_SET}/lake"
    valid_document["aws"]["region"] = "${WEIR_TEST_NEVER_SET_EITHER}"
    with pytest.raises(ConfigError) as raised:
        config_from_mapping(valid_document, environ={"WEIR__SPARK____MASTER": "x"})
    keys = [key for key, _ in raised.value.problems]
    assert sorted(keys) == ["WEIR__SPARK____MASTER", "aws.region", "lake.root"]


def test_conf_file_that_is_not_utf8_exits_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], demo_must_not_run: None
) -> None:
    conf = tmp_path / "latin1.yaml"
    conf.write_bytes("env: local\n# réglages\n".encode("latin-1"))
    code, _, err = run_cli(["config", "check", "--conf", str(conf)], capsys)
    assert code == EXIT_BAD_CONFIG
    assert f"--conf: {conf} is not UTF-8 text (byte 0xe9 at offset 14)" in err
    assert "Traceback" not in err


def test_conf_file_that_cannot_be_read_exits_2_with_the_reason(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    demo_must_not_run: None,
) -> None:
    conf = tmp_path / "locked.yaml"
    conf.write_text("env: local\n", "utf-8")

    def refused(self: Path, *args: Any, **kwargs: Any) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refused)  # root reads any file: a mode would not do
    code, _, err = run_cli(["config", "check", "--conf", str(conf)], capsys)
    assert code == EXIT_BAD_CONFIG
    assert f"--conf: cannot read {conf}: Permission denied" in err


# --- the reference page ---------------------------------------------------------------------


def schema_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        section = next(
            (t for t in (field.annotation, *get_args(field.annotation)) if _is_section(t)), None
        )
        key = f"{prefix}{field.alias or name}"  # the name a user writes
        keys += schema_keys(section, f"{key}.") if section else [key]
    return keys


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def test_every_key_of_the_schema_is_documented() -> None:
    page = (PROJECT_ROOT / "docs" / "configuration.md").read_text("utf-8")
    keys = schema_keys(WeirConfig)
    assert len(keys) > 40
    assert [key for key in keys if f"| `{key}` |" not in page] == []
