"""Fixtures the streaming tests share."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from weir.config import LakeConfig, WeirConfig
from weir.sources.kinesis import kinesis_client

from .builders import wait_stream_active


@pytest.fixture
def stream_config(local_infra: WeirConfig, tmp_path: Path) -> Iterator[WeirConfig]:
    """``local_infra`` with a lake of its own and a new 2-shard Kinesis stream of its own."""
    stream = f"weir-test-{uuid.uuid4().hex[:10]}"
    config = local_infra.model_copy(
        update={
            "lake": LakeConfig(root=f"file://{tmp_path}/lake"),
            "sources": local_infra.sources.model_copy(
                update={
                    "kinesis": local_infra.sources.kinesis.model_copy(update={"stream": stream})
                }
            ),
        }
    )
    client = kinesis_client(config)
    client.create_stream(StreamName=stream, ShardCount=2)
    wait_stream_active(client, stream)
    yield config
    client.delete_stream(StreamName=stream)
