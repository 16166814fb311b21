"""Detached local server processes: start, find again by PID file, stop, wait with a deadline.

A process started here outlives the command that started it (its own session, stdin closed,
stdout and stderr appended to ``<state_dir>/logs/<name>.log``); its PID goes to
``<state_dir>/<name>.pid``. A later command finds it through that file and trusts the PID only
if the process still looks like ours: its command line holds the expected signature and its
working directory is the state folder (every server is started there). A recycled PID is
never signalled, and nothing is ever looked up or stopped by process name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, TypeVar

from weir.errors import WeirError

T = TypeVar("T")

POLL_INTERVAL_SECONDS = 0.2
LOG_TAIL_LINES = 20

# Popen objects of servers this interpreter started, kept so they are reaped once stopped
# (a test session starts and stops servers in-process; the CLI exits and leaves them to init).
_children: dict[int, subprocess.Popen] = {}


class DeadlineExceededError(WeirError):
    """A condition did not come true before its deadline."""


def resolved_folder(subdir: str | Path) -> Path:
    """``subdir`` (e.g. ``.jars/kafka``) under the working directory, else under the source
    checkout: the first that `make setup` stamped ``.resolved``; the working directory's when
    neither is (the caller's error then names where it looked)."""
    candidates = [Path.cwd() / subdir, Path(__file__).resolve().parents[3] / subdir]
    for candidate in candidates:
        if (candidate / ".resolved").exists():
            return candidate
    return candidates[0]


def wait_until(
    condition: Callable[[], Optional[T]],
    *,
    timeout: float,
    what: str,
    interval: float = POLL_INTERVAL_SECONDS,
) -> T:
    """Poll ``condition`` until it returns something other than None/False, or raise.

    Exceptions from ``condition`` propagate (a condition that can tell "never" from
    "not yet" says so by raising). Raises :class:`DeadlineExceededError` naming ``what``.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result is not None and result is not False:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceededError(f"{what}: not done within {timeout:.0f}s")
        time.sleep(min(interval, remaining))


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could bind host:port now (SO_REUSEADDR, as servers bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports the kernel reports free right now (a test's private stack)."""
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.bind((host, 0))
            sockets.append(probe)
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' when there is none)."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 64 * 1024))
            text = log.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _is_zombie_or_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]


def _signal(pid: int, signum: int) -> None:
    # It may exit between the check and the signal: the outcome we wanted anyway.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a live (not zombie) process."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not (Path("/proc").is_dir() and _is_zombie_or_gone(pid))


@dataclass(frozen=True)
class ManagedProcess:
    """One named server under a state folder: its PID file, its log, how to recognise it.

    ``signature`` is a string its command line must contain (``kafka.Kafka``, ``moto.server``).
    """

    name: str
    state_dir: Path
    signature: str

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_file, lines)

    def recorded_pid(self) -> Optional[int]:
        """The PID in the PID file, if there is a readable one."""
        try:
            return int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def _looks_like_ours(self, pid: int) -> bool:
        proc = Path(f"/proc/{pid}")
        if not proc.is_dir():
            # No procfs (macOS): the command line is all there is to check.
            command = subprocess.run(
                ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True
            ).stdout
            return self.signature in command
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            return False
        return self.signature in command and Path(cwd) == self.state_dir.resolve()

    def running_pid(self) -> Optional[int]:
        """The PID of our live server, or None (no PID file, dead, or PID now someone else's)."""
        pid = self.recorded_pid()
        if pid is None or not pid_alive(pid) or not self._looks_like_ours(pid):
            return None
        return pid

    def start(
        self,
        argv: Sequence[str],
        env: Optional[dict[str, str]] = None,
        stop_with_parent: bool = False,
    ) -> int:
        """Start ``argv`` detached in the state folder; record and return its PID.

        The previous log is kept as ``<name>.log.1``, so a crash's log survives one restart.
        ``stop_with_parent`` (for private stacks of a test session): the server gets SIGTERM
        if this process dies without stopping it, so a killed test run leaves no orphan
        (Linux, via util-linux ``setpriv --pdeathsig``; ignored where that is missing).
        """
        setpriv = shutil.which("setpriv") if stop_with_parent else None
        if setpriv is not None:
            argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if self.log_file.exists():
            self.log_file.replace(self.log_file.with_name(self.log_file.name + ".1"))
        with self.log_file.open("ab") as log:
            child = subprocess.Popen(
                list(argv),
                cwd=self.state_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _children[child.pid] = child
        tmp = self.pid_file.with_name(self.pid_file.name + ".tmp")
        tmp.write_text(f"{child.pid}\n")
        tmp.replace(self.pid_file)
        return child.pid

    def exited(self, pid: int) -> bool:
        """True once ``pid`` (which we started) is no longer running."""
        return not pid_alive(pid)

    def stop(self, timeout: float) -> Optional[int]:
        """SIGTERM our server, wait up to ``timeout`` s, then SIGKILL; remove the PID file.

        Returns the PID that was stopped, or None when nothing of ours was running (a stale
        PID file is removed; a PID now used by another process is left alone).
        """
        pid = self.running_pid()
        if pid is not None:
            _signal(pid, signal.SIGTERM)
            try:
                wait_until(lambda: self.exited(pid), timeout=timeout, what=f"{self.name} shutdown")
            except DeadlineExceededError:
                _signal(pid, signal.SIGKILL)
                wait_until(lambda: self.exited(pid), timeout=10, what=f"{self.name} kill")
        self.pid_file.unlink(missing_ok=True)
        return pid
