"""The chaos run's cuttable proxy: forwards, refuses and drops while cut, forwards again."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from weir.infra.proxy import CuttableProxy


@pytest.fixture
def echo_server() -> Iterator[str]:
    """A TCP server on 127.0.0.1 that echoes what it receives, one thread per connection."""
    server = socket.create_server(("127.0.0.1", 0))

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1024):
                conn.sendall(data)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def round_trip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    return sock.recv(1024)


def connect(proxy: CuttableProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=5)


def test_a_cut_refuses_new_connections_drops_open_ones_and_a_restore_forwards_again(
    echo_server: str,
) -> None:
    with CuttableProxy(echo_server) as proxy:
        assert proxy.url == f"http://127.0.0.1:{proxy.port}"
        before = connect(proxy)
        assert round_trip(before, b"one") == b"one"

        proxy.cut()

        assert not proxy.is_up
        with pytest.raises(ConnectionRefusedError):
            connect(proxy)
        # The open connection is gone too: the peer sees the end of the stream or a reset.
        with contextlib.suppress(ConnectionResetError):
            assert before.recv(1024) == b""
        before.close()

        proxy.restore()

        with connect(proxy) as after:
            assert round_trip(after, b"two") == b"two"
    with pytest.raises(ConnectionRefusedError):
        connect(proxy)  # leaving the block cut it for good


def test_a_target_without_a_port_is_refused() -> None:
    with pytest.raises(ValueError, match="host and a port"):
        CuttableProxy("http://localhost")
