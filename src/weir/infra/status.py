"""What `weir infra` reports: each component's state, and the errors a user can meet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from weir.errors import WeirError
from weir.infra.process import log_tail


@dataclass(frozen=True)
class ComponentStatus:
    """One local component as `weir infra status` shows it.

    ``state`` is ``healthy`` (ours, running, answering), ``unhealthy`` (ours, running, not
    answering), ``stopped``, or ``port taken`` (not ours, but its port is in use).
    """

    name: str
    endpoint: str
    pid: Optional[int]
    state: str
    detail: str

    @property
    def healthy(self) -> bool:
        return self.state == "healthy"


class PortInUseError(WeirError):
    """A port from config is taken by a process Weir did not start (nothing was started)."""

    def __init__(self, port: int, key: str, what: str) -> None:
        super().__init__(
            f"port {port} ({key}) for {what} is already in use by another process on "
            f"127.0.0.1. Stop that process, or choose another port with {key} "
            f"(WEIR__{key.upper().replace('.', '__')}=<port>) and point the client settings "
            "at it."
        )
        self.port = port
        self.key = key


def failure(message: str, log: Path, lines: int = 20) -> WeirError:
    """A WeirError whose message ends with the last lines of ``log``."""
    tail = log_tail(log, lines)
    if not tail:
        return WeirError(f"{message} (log: {log}, empty)")
    indented = "\n".join(f"  | {line}" for line in tail.splitlines())
    return WeirError(f"{message}\nlast lines of {log}:\n{indented}")
