"""The `weir` command line surface (README, docs/contract.md), run in-process: `weir.cli.main`."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from weir.cli import main
from weir.errors import EXIT_BAD_CONFIG, EXIT_OK

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOCAL_CONF = PROJECT_ROOT / "conf" / "local.yaml"
EMR_CONF = PROJECT_ROOT / "conf" / "emr.yaml"

# The stable entry points (README, "Command line"), as (command, sub-commands).
COMMANDS: dict[str, tuple[str, ...]] = {
    "demo": (),
    "infra": ("up", "down", "status"),
    "simulate": (),
    "stream": (),
    "batch": ("rebuild",),
    "merge": (),
    "dq": ("run",),
    "catalog": ("sync", "ddl"),
    "maintain": (),
    "bench": (),
    "package": (),
    "emr": ("submit", "status", "schedule"),
    "config": ("check",),
}
GROUPS = {name: subs for name, subs in COMMANDS.items() if subs}
LEAVES = [
    [name, *([sub] if sub else [])] for name, subs in COMMANDS.items() for sub in subs or [""]
]


@pytest.fixture(autouse=True)
def _no_weir_overrides_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WEIR__"):
            monkeypatch.delenv(name)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def listed_commands(help_text: str) -> set[str]:
    """Names in the 'Commands' panel of a rich help screen (lines like '│ demo   The …')."""
    panel = help_text.split("Commands", 1)[1]
    return set(re.findall(r"^\W*│ ([a-z][a-z-]*)\s{2,}", panel, flags=re.MULTILINE))


def test_help_lists_every_design_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == EXIT_OK
    assert listed_commands(out) >= set(COMMANDS)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_group_help_lists_its_sub_commands(group: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([group, "--help"], capsys)
    assert code == EXIT_OK
    assert listed_commands(out) >= set(GROUPS[group])


@pytest.mark.parametrize("command", LEAVES, ids=" ".join)
def test_every_command_takes_conf(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([*command, "--help"], capsys)
    assert code == EXIT_OK
    assert "--conf" in out


@pytest.mark.parametrize(
    "args",
    [
        ["demo", "--devices", "0"],
        ["demo", "--minutes", "many"],
        ["demo", "--no-such-option"],
        ["no-such-command"],
        ["infra", "sideways"],
    ],
    ids=" ".join,
)
def test_bad_arguments_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(args, capsys)
    assert code == EXIT_BAD_CONFIG
    assert "Traceback" not in out + err


def test_config_check_exits_0_and_masks_the_secret_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    monkeypatch.setenv("WEIR__AWS__SECRET_ACCESS_KEY", "not-for-your-eyes-42")
    code, out, err = run(["config", "check", "--conf", str(LOCAL_CONF)], capsys)
    assert (code, err) == (EXIT_OK, "")
    assert "valid" in out
    assert "aws.secret_access_key" in out
    assert "***" in out
    assert "not-for-your-eyes-42" not in out


def test_config_check_shows_resolved_values(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEIR_BUCKET", "acme-lake")
    monkeypatch.setenv("WEIR__CATALOG__DATABASE", "telemetry_prod")
    code, out, _ = run(["config", "check", "--conf", str(EMR_CONF)], capsys)
    assert code == EXIT_OK
    assert "s3://acme-lake/weir" in out
    assert "telemetry_prod" in out


def test_config_check_masks_kafka_client_passwords(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = yaml.safe_load(LOCAL_CONF.read_text("utf-8"))
    document["sources"]["kafka"]["security"] = {
        "protocol": "SSL",
        "options": {"ssl.truststore.password": "truststore-pass-42"},
    }
    conf = tmp_path / "ssl.yaml"
    conf.write_text(yaml.safe_dump(document), "utf-8")
    code, out, _ = run(["config", "check", "--conf", str(conf)], capsys)
    assert code == EXIT_OK
    assert "truststore-pass-42" not in out
