"""``_control/writer_fences``: one writer at a time per identity, and a dead one is replaced.

Two writers sharing an identity (two Kinesis archivers on one stream, two `weir stream` on one
checkpoint) share Delta transaction app ids: when one has committed version N, the other's
version-N append is skipped by Delta without an error while its read positions have moved on.
A fence keeps the second one out, loudly.

A fence is a folder ``_control/writer_fences/<fence>/`` of small JSON files:

* ``epoch-<N>.json``, the **claim** of epoch N (holder, host, pid, acquired_at), written with a
  create-if-absent (``O_EXCL`` on a local disk; ``If-None-Match: *`` on S3). Of two writers
  claiming the same epoch exactly one succeeds. The holder is the writer of the greatest epoch.
* ``epoch-<N>.heartbeat``: ``heartbeat_at``, overwritten by the holder every
  ``timing.writer_heartbeat_seconds``;
* ``epoch-<N>.released``: written by the holder when it stops cleanly.

**Acquire**: read the greatest claim. Held by a live holder: :class:`FenceHeldError`, a WeirError
naming the holder, since when and its last heartbeat; nothing is written. Free (never held,
released, stale, or its holder ran on this host and that process is gone): claim the next
epoch; losing that race means reading again and, the winner being alive, FenceHeldError.

**Stale**: a holder whose last heartbeat (else its claim time) is older than
``timing.writer_stale_after_seconds`` is presumed dead and may be taken over. The holder
itself refuses to commit once its own last confirmed heartbeat is that old
(:meth:`FenceKeeper.ensure_held`), and a heartbeat that finds a greater epoch marks the fence
lost. Hosts' clocks must agree to well within the timeout.

Why files and not a Delta table: acquiring, renewing and checking cost a listing and a small
write each (milliseconds), not a Spark job and a Delta commit (a MERGE took 10+ s at load 20),
and they run beside a stream every few seconds. A lease cannot cover a pause between a check
and a commit (a long GC pause); writers that need certainty also verify after each commit
that it is theirs (the Kinesis archiver: its round's ``userMetadata``, docs/kinesis.md).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Optional, Protocol
from urllib.parse import urlparse

from weir.control.runs import iso, utc_now
from weir.errors import WeirError

log = logging.getLogger(__name__)

STALE_AFTER_KEY = "timing.writer_stale_after_seconds"
# A claim that lost the race for its epoch is decided again from a fresh read this many times.
CLAIM_ATTEMPTS = 5
_CLAIM = re.compile(r"^epoch-(\d{12})\.json$")


class FenceHeldError(WeirError):
    """Another live writer holds the fence: this one must not write."""


class FenceLostError(WeirError):
    """The fence was taken over (this writer looked dead): it must stop without committing."""


@dataclass(frozen=True)
class Lease:
    """Who holds a fence (the claim of its greatest epoch), since when, alive when."""

    fence: str
    holder: str  # <host>:<pid>:<token>, new at every acquisition
    host: str
    pid: int
    epoch: int
    acquired_at: datetime
    heartbeat_at: datetime  # the claim time until the first heartbeat
    released_at: Optional[datetime] = None

    def describe(self, now: datetime) -> str:
        age = (now - self.heartbeat_at).total_seconds()
        return (
            f"{self.holder} (host {self.host}, pid {self.pid}, epoch {self.epoch}) since "
            f"{iso(self.acquired_at)}, last heartbeat {iso(self.heartbeat_at)} ({age:.0f}s ago)"
        )


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_free(
    lease: Optional[Lease],
    now: datetime,
    stale_after_seconds: float,
    this_host: str,
    alive: Callable[[int], bool] = pid_alive,
) -> bool:
    """Whether a writer may take the fence whose current lease is ``lease``. Pure but ``alive``.

    Free when nobody ever held it, it was released, its holder's last heartbeat is older
    than the timeout, or its holder ran on this host and its process is gone.
    """
    if lease is None or lease.released_at is not None:
        return True
    if now - lease.heartbeat_at > timedelta(seconds=stale_after_seconds):
        return True
    return lease.host == this_host and not alive(lease.pid)


# --- where fences live ----------------------------------------------------------------------


class FenceStore(Protocol):
    """A folder of small files with create-if-absent: the one atomic step a fence needs."""

    def names(self, folder: str) -> list[str]: ...
    def read(self, folder: str, name: str) -> Optional[bytes]: ...
    def create(self, folder: str, name: str, data: bytes) -> bool: ...  # False: existed
    def put(self, folder: str, name: str, data: bytes) -> None: ...


class LocalFenceStore:
    """``file://`` lakes: ``O_CREAT | O_EXCL`` is atomic on a local (or POSIX shared) disk."""

    def __init__(self, root: str) -> None:
        self.root = Path(urlparse(root).path)

    def names(self, folder: str) -> list[str]:
        path = self.root / folder
        return sorted(os.listdir(path)) if path.is_dir() else []

    def read(self, folder: str, name: str) -> Optional[bytes]:
        try:
            return (self.root / folder / name).read_bytes()
        except FileNotFoundError:
            return None

    def create(self, folder: str, name: str, data: bytes) -> bool:
        # Written whole under a private name, then hard-linked to ``name``: link() fails when
        # the name exists, like O_EXCL, and a reader never sees the file before its content
        # (an O_EXCL file is empty until written, and a racing reader took it for corrupt).
        (self.root / folder).mkdir(parents=True, exist_ok=True)
        partial = self.root / folder / f".{name}.{uuid.uuid4().hex[:8]}"
        partial.write_bytes(data)
        try:
            os.link(partial, self.root / folder / name)
        except FileExistsError:
            return False
        finally:
            partial.unlink()
        return True

    def put(self, folder: str, name: str, data: bytes) -> None:
        (self.root / folder).mkdir(parents=True, exist_ok=True)
        partial = self.root / folder / f".{name}.{uuid.uuid4().hex[:8]}"
        partial.write_bytes(data)
        os.replace(partial, self.root / folder / name)  # readers never see half a file


class S3FenceStore:
    """``s3://`` / ``s3a://`` lakes: S3's conditional PUT (``If-None-Match: *``) is atomic."""

    def __init__(self, root: str, client: Any) -> None:
        parsed = urlparse(root)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.client = client

    def _key(self, folder: str, name: str = "") -> str:
        return "/".join(part for part in (self.prefix, folder, name) if part)

    def names(self, folder: str) -> list[str]:
        prefix = self._key(folder) + "/"
        names: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            names.extend(item["Key"][len(prefix) :] for item in page.get("Contents", []))
        return sorted(names)

    def read(self, folder: str, name: str) -> Optional[bytes]:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(folder, name))
        except self.client.exceptions.NoSuchKey:
            return None
        return answer["Body"].read()

    def create(self, folder: str, name: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(folder, name), Body=data, IfNoneMatch="*"
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                return False
            raise
        return True

    def put(self, folder: str, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(folder, name), Body=data)


def fence_store(config: Any, fences_root: str) -> FenceStore:
    """The store for the fences folder ``fences_root`` (``LakeLayout.writer_fences``)."""
    scheme = urlparse(fences_root).scheme
    if scheme == "file":
        return LocalFenceStore(fences_root)
    if scheme in ("s3", "s3a"):
        from weir.aws import aws_client

        return S3FenceStore(fences_root, aws_client(config, "s3"))
    raise WeirError(f"writer fences: no store for {fences_root} (file://, s3:// or s3a://)")


# --- reading and taking a fence -------------------------------------------------------------


def _claim_name(epoch: int) -> str:
    return f"epoch-{epoch:012d}.json"


def _json(data: dict) -> bytes:
    return json.dumps(data, sort_keys=True).encode()


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def read_lease(store: FenceStore, fence: str) -> Optional[Lease]:
    """The current lease of ``fence`` (its greatest claim); None when never claimed."""
    epochs = [int(m.group(1)) for m in map(_CLAIM.match, store.names(fence)) if m]
    if not epochs:
        return None
    epoch = max(epochs)
    claim = json.loads(store.read(fence, _claim_name(epoch)) or b"{}")
    stem = _claim_name(epoch).removesuffix(".json")
    beat = store.read(fence, f"{stem}.heartbeat")
    released = store.read(fence, f"{stem}.released")
    acquired_at = _time(claim["acquired_at"])
    return Lease(
        fence=fence,
        holder=claim["holder"],
        host=claim["host"],
        pid=int(claim["pid"]),
        epoch=epoch,
        acquired_at=acquired_at,
        heartbeat_at=_time(json.loads(beat)["heartbeat_at"]) if beat else acquired_at,
        released_at=_time(json.loads(released)["released_at"]) if released else None,
    )


def acquire(
    store: FenceStore,
    fence: str,
    stale_after_seconds: float,
    clock: Callable[[], datetime] = utc_now,
    host: Optional[str] = None,
    pid: Optional[int] = None,
    alive: Callable[[int], bool] = pid_alive,
) -> Lease:
    """Claim ``fence`` for this process, or raise :class:`FenceHeldError` naming its live holder."""
    host = host or socket.gethostname()
    pid = os.getpid() if pid is None else pid
    holder = f"{host}:{pid}:{uuid.uuid4().hex[:8]}"
    for _ in range(CLAIM_ATTEMPTS):
        seen = read_lease(store, fence)
        now = clock()
        if not is_free(seen, now, stale_after_seconds, host, alive):
            raise FenceHeldError(
                f"{fence} is held by {seen.describe(now)}: another writer with this identity "
                "is running, and a second one would make Delta skip its appends silently. "
                f"Stop that one first; a holder silent for longer than {STALE_AFTER_KEY} "
                f"({stale_after_seconds:.0f}s), or gone from this host, is taken over"
            )
        epoch = (seen.epoch if seen else 0) + 1
        claim = {"holder": holder, "host": host, "pid": pid, "acquired_at": iso(now)}
        if store.create(fence, _claim_name(epoch), _json(claim)):
            if seen is not None and seen.released_at is None:
                log.warning("%s: taken over from %s, presumed dead", fence, seen.describe(now))
            log.info("%s: acquired by %s (epoch %d)", fence, holder, epoch)
            return Lease(fence, holder, host, pid, epoch, now, now)
        # Another writer claimed that epoch first: read again (it is alive: FenceHeldError).
    raise WeirError(f"{fence}: lost the claim {CLAIM_ATTEMPTS} times in a row to other writers")


class FenceKeeper:
    """Holds a fence while a writer runs: heartbeats in a thread, checks before commits.

    ``with FenceKeeper(...) as keeper:`` acquires (or raises FenceHeldError, nothing written),
    heartbeats every ``heartbeat_seconds`` and releases on a clean exit. ``on_lost`` is called
    once if the fence turns out to be in other hands (e.g. to stop the job); the writer calls
    :meth:`ensure_held` before each commit.
    """

    def __init__(
        self,
        store: FenceStore,
        fence: str,
        heartbeat_seconds: float,
        stale_after_seconds: float,
        on_lost: Callable[[], object] = lambda: None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.fence = fence
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_after_seconds = stale_after_seconds
        self.on_lost = on_lost
        self.clock = clock
        self.lease: Optional[Lease] = None
        self.lost: Optional[str] = None  # why, once lost
        self._confirmed = 0.0  # monotonic time of the last confirmed heartbeat
        self._stop = threading.Event()
        self._beating = threading.Lock()  # the thread's beat and ensure_held's, one at a time
        self._thread: Optional[threading.Thread] = None

    @property
    def stem(self) -> str:
        return _claim_name(self.lease.epoch).removesuffix(".json")

    def __enter__(self) -> FenceKeeper:
        started = time.monotonic()
        self.lease = acquire(self.store, self.fence, self.stale_after_seconds, self.clock)
        self._confirmed = started
        self._thread = threading.Thread(
            target=self._beat, name=f"weir-fence-{self.fence}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.lease is None or self.lost is not None:
            return
        try:
            released = {"released_at": iso(self.clock())}
            self.store.put(self.fence, f"{self.stem}.released", _json(released))
            log.info("%s: released by %s", self.fence, self.lease.holder)
        except Exception:  # the job's own outcome matters more; the lease goes stale
            log.exception("%s: could not release it; it goes stale", self.fence)

    def heartbeat(self) -> None:
        """Renew the lease once, unless a greater epoch was claimed: then it is lost."""
        with self._beating:
            if self.lease is None or self.lost is not None:
                return
            started = time.monotonic()
            current = read_lease(self.store, self.fence)
            if current is None or current.epoch != self.lease.epoch:
                taker = "nobody" if current is None else current.describe(self.clock())
                self._lose(f"taken over by {taker}")
                return
            beat = {"heartbeat_at": iso(self.clock())}
            self.store.put(self.fence, f"{self.stem}.heartbeat", _json(beat))
            self._confirmed = started

    def _lose(self, why: str) -> None:
        self.lost = why
        log.error("%s: lost by %s: %s", self.fence, self.lease.holder, why)
        self.on_lost()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                self.heartbeat()
            except Exception as error:  # tried again next beat; ensure_held bounds the wait
                log.warning("%s: heartbeat failed: %s", self.fence, error)
            if self.lost is not None:
                return

    def ensure_held(self) -> None:
        """Raise :class:`FenceLostError` unless this writer may still commit.

        Reads the fence once (a listing): a greater epoch means another writer took over.
        A last confirmed heartbeat older than the stale timeout counts as lost too: another
        writer was entitled to take over, even if none has yet.
        """
        if self.lost is None:
            if time.monotonic() - self._confirmed >= self.stale_after_seconds:
                self._lose(
                    f"its last confirmed heartbeat is older than {STALE_AFTER_KEY} "
                    f"({self.stale_after_seconds:.0f}s)"
                )
            else:
                current = read_lease(self.store, self.fence)
                if current is None or current.epoch != self.lease.epoch:
                    taker = "nobody" if current is None else current.describe(self.clock())
                    self._lose(f"taken over by {taker}")
        if self.lost is not None:
            raise FenceLostError(
                f"{self.fence}: this writer ({self.lease.holder}) no longer holds the fence "
                f"({self.lost}); it stops without committing. What it committed stays; the "
                "writer that holds the fence continues from there"
            )

    def raise_if_lost(self) -> None:
        """FenceLostError if a heartbeat found the fence in other hands (no read)."""
        if self.lost is not None:
            self.ensure_held()


def hold_fence(
    config: Any, fences_root: str, fence: str, on_lost: Callable[[], object] = lambda: None
) -> FenceKeeper:
    """A :class:`FenceKeeper` for ``fence`` with the configured heartbeat and timeout."""
    return FenceKeeper(
        fence_store(config, fences_root),
        fence,
        heartbeat_seconds=config.timing.writer_heartbeat_seconds,
        stale_after_seconds=config.timing.writer_stale_after_seconds,
        on_lost=on_lost,
    )


__all__ = [
    "FenceHeldError",
    "FenceKeeper",
    "FenceLostError",
    "FenceStore",
    "Lease",
    "LocalFenceStore",
    "S3FenceStore",
    "acquire",
    "fence_store",
    "hold_fence",
    "is_free",
    "pid_alive",
    "read_lease",
]
