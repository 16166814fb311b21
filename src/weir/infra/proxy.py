"""A TCP proxy on 127.0.0.1 whose link to its target can be cut for a while.

`weir chaos --source kinesis` puts one in front of the local AWS endpoint: a cut refuses new
connections and drops open ones, which is what a network outage between the jobs and AWS looks
like to a client. Stopping the endpoint itself would not do: moto keeps its streams and
buckets in memory, so a restart would lose the data the run is about.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlparse

from weir.infra.process import free_ports

LOCAL_HOST = "127.0.0.1"
_CHUNK = 65_536


class CuttableProxy:
    """Forwards every connection to ``target`` (``http://host:port``) until :meth:`cut`;
    :meth:`restore` listens again on the same port. ``url`` is what clients are given."""

    def __init__(self, target: str) -> None:
        parsed = urlparse(target)
        if parsed.hostname is None or parsed.port is None:
            raise ValueError(f"a proxy needs a target with a host and a port, not {target!r}")
        self.target = (parsed.hostname, parsed.port)
        self.port = free_ports(1)[0]
        self.url = f"{parsed.scheme or 'http'}://{LOCAL_HOST}:{self.port}"
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def __enter__(self) -> CuttableProxy:
        self.restore()
        return self

    def __exit__(self, *_: object) -> None:
        self.cut()

    def restore(self) -> None:
        """Listen (again) on the proxy's port; a no-op while it is up."""
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((LOCAL_HOST, self.port))
            listener.listen(64)
            self._listener = listener
        threading.Thread(
            target=self._accept, args=(listener,), name="weir-proxy-accept", daemon=True
        ).start()

    def cut(self) -> None:
        """Stop listening (connects are refused) and drop every open connection."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._open = self._open, set()
        for sock in ([listener] if listener is not None else []) + list(sockets):
            _close(sock)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed by cut()
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    _close(client)
                    _close(upstream)
                    return
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(source, sink), name="weir-proxy-pump", daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(_CHUNK):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


__all__ = ["CuttableProxy"]
