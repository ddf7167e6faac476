"""A loopback TCP proxy the tests can cut, to take the database away for real.

Clients connect to ``127.0.0.1:<port>``; every byte is relayed to the real
server. :meth:`cut` drops every open connection and refuses new ones until
:meth:`restore`. :meth:`lose_reply_after` lets one request that contains a
marker (b"COMMIT") through to the server, then drops the connection before
the server's answer arrives: the client cannot tell whether it committed
(in autocommit, the statement itself commits).
"""

from __future__ import annotations

import contextlib
import socket
import threading


class Proxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._lose_after: bytes | None = None
        self._closed = False
        self.requests = 0
        """Client-to-server writes relayed: one per round trip for request/reply protocols."""
        threading.Thread(target=self._accept, daemon=True).start()

    def url_for(self, url: str) -> str:
        """``url`` pointed at this proxy instead of the server."""
        import sqlalchemy as sa

        return (
            sa.make_url(url)
            .set(host="127.0.0.1", port=self.port)
            .render_as_string(hide_password=False)
        )

    def cut(self) -> None:
        self._up.clear()
        with self._lock:
            for sock in list(self._open):
                _close(sock)
            self._open.clear()

    def restore(self) -> None:
        self._up.set()

    def lose_reply_after(self, marker: bytes) -> None:
        self._lose_after = marker

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self.listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            pair = _Pair(self, client, upstream)
            threading.Thread(target=pair.relay_requests, daemon=True).start()
            threading.Thread(target=pair.relay_replies, daemon=True).start()


class _Pair:
    """One client connection and its upstream, relayed both ways."""

    def __init__(self, proxy: Proxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.doomed = threading.Event()

    def relay_requests(self) -> None:
        marker = None
        try:
            while chunk := self.client.recv(65536):
                self.proxy.requests += 1
                marker = self.proxy._lose_after
                if marker is not None and marker in chunk:
                    self.proxy._lose_after = None
                    self.doomed.set()  # the next reply is swallowed
                self.upstream.sendall(chunk)
        except OSError:
            pass
        self.close()

    def relay_replies(self) -> None:
        try:
            while chunk := self.upstream.recv(65536):
                if self.doomed.is_set():
                    break
                self.client.sendall(chunk)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        with self.proxy._lock:
            self.proxy._open.discard(self.client)
            self.proxy._open.discard(self.upstream)
        _close(self.client)
        _close(self.upstream)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
