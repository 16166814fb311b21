"""Trino's start-up failures are clear errors before anything starts, never a hang.

No real Trino runs here (tests/test_trino_parity.py starts one): a missing or too old Java, a
taken port and a server that dies at once are all met before or right after the launch.
"""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest

from weir import infra
from weir.config import ConfigError, WeirConfig, config_from_mapping
from weir.errors import WeirError
from weir.infra.process import free_ports
from weir.infra.status import PortInUseError
from weir.infra.trino import TrinoServer, catalog_properties


def trino_config(base: WeirConfig, state_dir: Path, **infra_keys) -> WeirConfig:
    """``base`` on free ports under ``state_dir`` with Trino's client pointing at its port."""
    kafka_port, controller_port, aws_port, trino_port = free_ports(4)
    config = infra.stack_config(
        base,
        state_dir,
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        aws_port=aws_port,
        trino_port=trino_port,
    )
    document = config.model_dump()
    document["infra"].update(infra_keys)
    return config_from_mapping(document, environ={})


def fake_java(folder: Path, version: str, then: str = "exit 1") -> str:
    """A `java` that reports ``version`` to -version and otherwise runs ``then``."""
    script = folder / f"java-{version}"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-version" ]; then echo \'openjdk version "{version}" 2026-01-20\' >&2; '
        "exit 0; fi\n"
        f"{then}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def nothing_started(config: WeirConfig) -> bool:
    state = Path(config.infra.state_dir)
    return not any(state.glob("*.pid"))


def test_a_missing_java_fails_before_anything_starts(
    weir_config: WeirConfig, tmp_path: Path
) -> None:
    config = trino_config(weir_config, tmp_path / "state", trino_java=str(tmp_path / "no-java"))

    with pytest.raises(WeirError, match=r"no Java for Trino at .*no-java \(infra\.trino_java\)"):
        infra.up(config, with_trino=True)

    assert nothing_started(config)


def test_a_java_older_than_24_is_refused_naming_the_version(
    weir_config: WeirConfig, tmp_path: Path
) -> None:
    config = trino_config(weir_config, tmp_path / "state", trino_java=fake_java(tmp_path, "17.0.9"))

    with pytest.raises(WeirError, match=r"is Java 17; Trino 476 needs Java 24\+"):
        infra.up(config, with_trino=True)

    assert nothing_started(config)


def test_a_taken_port_fails_before_anything_starts(weir_config: WeirConfig, tmp_path: Path) -> None:
    config = trino_config(weir_config, tmp_path / "state")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", config.infra.trino_port))
        squatter.listen(1)

        with pytest.raises(PortInUseError, match=r"infra\.trino_port"):
            infra.up(config, with_trino=True)

    assert nothing_started(config)


def test_a_server_that_exits_during_start_up_is_reported_with_its_log(
    weir_config: WeirConfig, tmp_path: Path
) -> None:
    dying = fake_java(tmp_path, "25.0.2", then="echo 'Error: Configuration is invalid' >&2; exit 3")
    config = trino_config(weir_config, tmp_path / "state", trino_java=dying)
    server = TrinoServer(config)
    server.preflight()

    pid = server.launch()

    with pytest.raises(WeirError, match=r"(?s)exited during start-up.*Configuration is invalid"):
        server.wait_ready(pid)
    server.stop()


def test_the_trino_client_must_point_at_the_trino_up_starts(
    weir_config: WeirConfig, tmp_path: Path
) -> None:
    config = trino_config(weir_config, tmp_path / "state")
    document = config.model_dump()
    document["query"]["trino_url"] = "http://127.0.0.1:1"
    elsewhere = config_from_mapping(document, environ={})

    with pytest.raises(ConfigError, match=r"query\.trino_url"):
        infra.up(elsewhere, with_trino=True)


def test_the_catalog_reads_glue_and_s3_at_the_jobs_endpoint(weir_config: WeirConfig) -> None:
    properties = catalog_properties(weir_config)
    endpoint = weir_config.aws.endpoint_url

    assert properties["connector.name"] == "delta_lake"
    assert properties["hive.metastore"] == "glue"
    assert properties["hive.metastore.glue.endpoint-url"] == endpoint
    assert properties["s3.endpoint"] == endpoint
    assert properties["s3.path-style-access"] == "true"
    assert properties["fs.native-local.enabled"] == "true"
