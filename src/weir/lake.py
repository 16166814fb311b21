"""The lake layout (docs/contract.md): every path Weir reads or writes, derived from one root.

No other module builds a lake path by hand; jobs, tests and notebooks ask this object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from weir.config import WeirConfig

_QUERY_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class LakeLayout:
    """Paths under one lake root (``file:///…/.lake`` locally, ``s3://bucket/prefix`` on AWS)."""

    root: str
    landing_root: Optional[str] = None

    @classmethod
    def from_config(cls, config: WeirConfig) -> LakeLayout:
        return cls(root=config.lake.root, landing_root=config.lake.landing)

    def _path(self, *parts: str) -> str:
        return "/".join((self.root.rstrip("/"), *parts))

    @property
    def raw(self) -> str:
        return self._path("raw", "telemetry")

    @property
    def quarantine(self) -> str:
        return self._path("quarantine", "telemetry")

    @property
    def speed(self) -> str:
        return self._path("speed", "telemetry_minute")

    @property
    def batch(self) -> str:
        return self._path("batch", "telemetry_minute")

    @property
    def batch_events(self) -> str:
        """The batch layer's index of first-received events (BATCH_EVENTS_SCHEMA)."""
        return self._path("batch", "events")

    @property
    def serving(self) -> str:
        return self._path("serving", "telemetry_minute")

    @property
    def batch_runs(self) -> str:
        return self._path("_control", "batch_runs")

    @property
    def merge_runs(self) -> str:
        return self._path("_control", "merge_runs")

    @property
    def stream_progress(self) -> str:
        return self._path("_control", "stream_progress")

    @property
    def writer_fences(self) -> str:
        """A folder per writer identity: its epoch claims and heartbeats (weir.control.fences)."""
        return self._path("_control", "writer_fences")

    @property
    def kinesis_gaps(self) -> str:
        """Kinesis records trimmed before they were read, accepted and recorded."""
        return self._path("_control", "kinesis_gaps")

    @property
    def dq_results(self) -> str:
        return self._path("dq", "results")

    @property
    def dq_docs(self) -> str:
        """The Great Expectations Data Docs site of the latest check run (``index.html``)."""
        return self._path("dq", "docs")

    @property
    def landing(self) -> str:
        """JSON-lines files for the files source (a Firehose delivery prefix on AWS)."""
        if self.landing_root:
            return self.landing_root.rstrip("/")
        return self._path("landing", "telemetry")

    def checkpoint(self, query_name: str) -> str:
        """Checkpoint folder of one streaming query; the name is part of its identity."""
        if not _QUERY_NAME.fullmatch(query_name):
            raise ValueError(f"query name {query_name!r} must match {_QUERY_NAME.pattern}")
        return self._path("_checkpoints", query_name)


def local_path(uri: str) -> str:
    """The filesystem path of a ``file://`` URI (for the few places that need os-level access)."""
    if not uri.startswith("file://"):
        raise ValueError(f"{uri} is not a local file:// path")
    return uri[len("file://") :]
