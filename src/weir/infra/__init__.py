"""The local stack behind `weir infra up | down | status` (docs/infra.md).

Two components, both on 127.0.0.1 at ports from ``infra.*``, both keeping everything under
``infra.state_dir``: a single-node KRaft Apache Kafka broker (:mod:`weir.infra.kafka`) and a
moto server speaking Kinesis, S3, Glue and EMR (:mod:`weir.infra.aws`); and on request
(``up --with trino``) a single-node Trino reading the Glue catalog (:mod:`weir.infra.trino`).

``up`` is idempotent (a healthy component is left alone; resources are created only when
missing) and checks everything it can before starting anything; when a component fails to
start, the ones this call started are stopped again. ``down`` stops only processes this stack
started, found by PID file. Both hold a lock on the state folder, so two commands never race.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union
from urllib.parse import urlparse

from weir.config import ConfigError, WeirConfig, config_from_mapping
from weir.infra.aws import AwsEndpoint
from weir.infra.kafka import KafkaBroker
from weir.infra.process import free_ports
from weir.infra.status import ComponentStatus, PortInUseError
from weir.infra.trino import TrinoServer

Component = Union[KafkaBroker, AwsEndpoint, TrinoServer]
OPTIONAL_COMPONENTS = ("trino",)

_LOCAL_HOSTS = ("127.0.0.1", "localhost")


@dataclass
class StartReport:
    """What `up` did for one component."""

    name: str
    endpoint: str
    pid: int
    started: bool  # False: it was already running
    seconds: float  # start-up time until healthy (0 when already running and healthy)
    resources: list[str] = field(default_factory=list)


def components(config: WeirConfig, with_trino: bool = True) -> list[Component]:
    """The stack's components, in start order (stopped in reverse); Trino last, on request."""
    stack: list[Component] = [KafkaBroker(config), AwsEndpoint(config)]
    return [*stack, TrinoServer(config)] if with_trino else stack


def check_local_endpoints(config: WeirConfig) -> None:
    """The client settings must point at the stack `up` starts; raise ConfigError if not.

    Otherwise the broker would start on ``infra.kafka_port`` while the simulator and the
    streams talk to ``sources.kafka.bootstrap_servers`` somewhere else.
    """
    if config.env != "local":
        raise ConfigError(
            "env", "`weir infra` runs the local stack; use a configuration with env: local"
        )
    kafka_port = config.infra.kafka_port
    servers = [s.strip() for s in config.sources.kafka.bootstrap_servers.split(",")]
    host, _, port = servers[0].rpartition(":")
    if len(servers) != 1 or host not in _LOCAL_HOSTS or int(port) != kafka_port:
        raise ConfigError(
            "sources.kafka.bootstrap_servers",
            f"must be 127.0.0.1:{kafka_port} (the local broker at infra.kafka_port), "
            f"not {config.sources.kafka.bootstrap_servers!r}",
        )
    aws_port = config.infra.aws_port
    for key, url in (
        ("aws.endpoint_url", config.aws.endpoint_url),
        ("sources.kinesis.endpoint_url", config.sources.kinesis.endpoint_url),
    ):
        if url is None and key == "sources.kinesis.endpoint_url":
            continue  # the Kinesis source then uses aws.endpoint_url
        parsed = urlparse(url or "")
        if parsed.hostname not in _LOCAL_HOSTS or parsed.port != aws_port:
            raise ConfigError(
                key,
                f"must be http://127.0.0.1:{aws_port} (the local endpoint at infra.aws_port), "
                f"not {url!r}",
            )


def check_trino_endpoint(config: WeirConfig) -> None:
    """``query.trino_url`` must name the Trino `up --with trino` starts; ConfigError if not."""
    port = config.infra.trino_port
    parsed = urlparse(config.query.trino_url or "")
    if parsed.hostname not in _LOCAL_HOSTS or parsed.port != port:
        raise ConfigError(
            "query.trino_url",
            f"must be http://127.0.0.1:{port} (the local Trino at infra.trino_port), "
            f"not {config.query.trino_url!r}",
        )


@contextmanager
def _locked(config: WeirConfig) -> Iterator[None]:
    state_dir = Path(config.infra.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "infra.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def up(
    config: WeirConfig, *, with_trino: bool = False, stop_with_parent: bool = False
) -> list[StartReport]:
    """Start whatever is not running, wait until each answers, create missing resources.

    ``with_trino``: Trino too (its start-up takes 20-60 s and 1 GiB). Idempotent. Raises
    ConfigError (nothing started) when client settings and ``infra.*`` disagree, WeirError
    (nothing started) for a taken port, missing Java or jars, and WeirError with the log's
    last lines when a component fails to start.
    ``stop_with_parent``: servers started now stop if the calling process dies (private stacks).
    """
    check_local_endpoints(config)
    if with_trino:
        check_trino_endpoint(config)
    with _locked(config):
        stack = components(config, with_trino)
        running = {c.name: c.process.running_pid() for c in stack}
        for component in stack:
            if running[component.name] is None:
                component.preflight()
        started: list[Component] = []
        reports = []
        try:
            pids = {}
            for component in stack:
                pid = running[component.name]
                if pid is None:
                    pid = component.launch(stop_with_parent)
                    started.append(component)
                pids[component.name] = pid
            for component in stack:
                clock = time.monotonic()
                component.wait_ready(pids[component.name])
                resources = component.ensure_resources()
                is_new = component in started
                reports.append(
                    StartReport(
                        name=component.name,
                        endpoint=component.endpoint,
                        pid=pids[component.name],
                        started=is_new,
                        seconds=time.monotonic() - clock,
                        resources=resources,
                    )
                )
        except BaseException:
            for component in reversed(started):
                component.stop()
            raise
        return reports


def down(
    config: WeirConfig, only: Optional[Iterable[str]] = None
) -> list[tuple[str, Optional[int]]]:
    """Stop what `up` started (by PID file, SIGTERM then SIGKILL after a deadline).

    ``only``: the names of the components to stop (``weir demo`` stops just those its own
    ``up`` started); default all, Trino included when it runs. Returns (component, stopped
    PID or None when it was not running). Data stays in the state folder: the broker's
    topics survive; the AWS endpoint's in-memory state does not.
    """
    names = None if only is None else set(only)
    with _locked(config):
        return [
            (c.name, c.stop())
            for c in reversed(components(config))
            if (names is None or c.name in names) and not _never_started(c)
        ]


def _never_started(component: Component) -> bool:
    """An optional component with no PID file: nothing to stop, nothing to report."""
    return component.name in OPTIONAL_COMPONENTS and component.process.recorded_pid() is None


def status(config: WeirConfig) -> list[ComponentStatus]:
    """Each component's state, endpoint, PID and health (read-only).

    Trino is listed only when started (it is optional): a stack without it is healthy.
    """
    return [c.status() for c in components(config) if not _never_started(c)]


def stack_config(
    base: WeirConfig,
    state_dir: Path,
    *,
    kafka_port: int,
    kafka_controller_port: int,
    aws_port: int,
    trino_port: Optional[int] = None,
) -> WeirConfig:
    """``base`` with the stack moved to ``state_dir`` and the given ports, clients included."""
    document = base.model_dump()
    document["infra"] = {
        **document["infra"],
        "state_dir": str(state_dir),
        "kafka_port": kafka_port,
        "kafka_controller_port": kafka_controller_port,
        "aws_port": aws_port,
    }
    if trino_port is not None:
        document["infra"]["trino_port"] = trino_port
        document["query"]["trino_url"] = f"http://127.0.0.1:{trino_port}"
    endpoint = f"http://127.0.0.1:{aws_port}"
    document["sources"]["kafka"]["bootstrap_servers"] = f"127.0.0.1:{kafka_port}"
    document["sources"]["kinesis"]["endpoint_url"] = endpoint
    document["aws"]["endpoint_url"] = endpoint
    return config_from_mapping(document, environ={})


@contextmanager
def private_stack(
    base: WeirConfig, state_dir: Path, attempts: int = 3, *, with_trino: bool = False
) -> Iterator[WeirConfig]:
    """A stack of its own on free ports under ``state_dir``, stopped on exit.

    Yields ``base`` with ``infra.*``, ``sources.kafka.bootstrap_servers``,
    ``sources.kinesis.endpoint_url`` and ``aws.endpoint_url`` (and with Trino,
    ``query.trino_url``) pointing at it. Ports are
    picked free; if another process takes one before the stack binds it, new ports are tried
    (``attempts`` times). For tests and demos that must not touch the default stack.
    """
    for attempt in range(1, attempts + 1):
        kafka_port, controller_port, aws_port, trino_port = free_ports(4)
        config = stack_config(
            base,
            state_dir,
            kafka_port=kafka_port,
            kafka_controller_port=controller_port,
            aws_port=aws_port,
            trino_port=trino_port if with_trino else None,
        )
        try:
            up(config, with_trino=with_trino, stop_with_parent=True)
            break
        except PortInUseError:
            if attempt == attempts:
                raise
    try:
        yield config
    finally:
        down(config)


__all__ = [
    "AwsEndpoint",
    "ComponentStatus",
    "KafkaBroker",
    "PortInUseError",
    "StartReport",
    "TrinoServer",
    "check_local_endpoints",
    "check_trino_endpoint",
    "components",
    "down",
    "private_stack",
    "stack_config",
    "status",
    "up",
]
