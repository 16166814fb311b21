"""The local stack for tests: one Kafka broker and one AWS endpoint per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from weir.config import WeirConfig
from weir.infra import private_stack


@pytest.fixture(scope="session")
def local_infra(weir_config: WeirConfig) -> Iterator[WeirConfig]:
    """A running local stack, private to this test session; yields the config pointing at it.

    What runs: the single-node KRaft Kafka broker and the moto AWS endpoint of
    `weir infra up`, on free (never the default 9092/9093/5055) ports on 127.0.0.1, with their
    state, PID files and logs under ``weir_config.infra.state_dir`` (a tmp folder). So a
    developer's own `weir infra up` stack and other test sessions are never touched.

    The yielded config is ``weir_config`` with ``infra.*``,
    ``sources.kafka.bootstrap_servers``, ``sources.kinesis.endpoint_url`` and
    ``aws.endpoint_url`` pointing at that stack. The telemetry topic
    (``sources.kafka.topic``, ``sources.kafka.partitions`` partitions) and the Kinesis stream
    (``sources.kinesis.stream``, ``sources.kinesis.shards`` shards) exist and may already hold
    other tests' records: a test that needs an empty topic or stream creates its own under a
    unique name. Never stop the stack from a test; it stops when the session ends.

    Starting takes ~10 s (the broker's JVM), once per session. Tests using it are slow tests:
    mark them ``@pytest.mark.slow``.
    """
    with private_stack(weir_config, Path(weir_config.infra.state_dir)) as config:
        yield config
