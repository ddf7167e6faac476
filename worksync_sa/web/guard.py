"""What stands between a request and the page: methods, hosts, the token, and safe headers.

The page only reads, so only GET and HEAD exist (everything else gets 405
before any route runs). With a token, a request must carry it: as
``Authorization: Bearer TOKEN`` (programs), or as the password of HTTP
Basic (a browser's login box; the user name is ignored). Both are compared
in constant time. With allowed host names (the command on loopback), a
request naming any other host is refused, so a web page elsewhere cannot
reach the local status page by pointing its own domain at 127.0.0.1 (DNS
rebinding).

Every response, the refusals included, carries a Content-Security-Policy
that allows only the package's own script and style sheet (no inline
script, no other origin), ``nosniff``, ``no-referrer``, and no framing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALLOWED_METHODS = ("GET", "HEAD")
REALM = "worksync status"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
NO_STORE = "no-store"
"""The default Cache-Control: figures behind a token must not linger in shared caches."""


def _digest(secret: str | bytes) -> bytes:
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hashlib.sha256(raw).digest()


class Guard:
    """ASGI middleware: refuses what the page must not serve, and secures what it does."""

    def __init__(
        self, app: ASGIApp, *, token: str | None, allowed_hosts: Iterable[str] | None
    ) -> None:
        self.app = app
        # Digests of equal length: the comparison takes the same time whatever was sent.
        self._token = None if token is None else _digest(token)
        self._hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # a websocket: the page has none
            await receive()  # its connect, which the close then refuses
            await send({"type": "websocket.close", "code": 1008})
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if "cache-control" not in headers:
                    headers["Cache-Control"] = NO_STORE
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, secured)
            return
        await self.app(scope, receive, secured)

    def _refusal(self, scope: Scope) -> PlainTextResponse | None:
        headers = Headers(scope=scope)
        if self._hosts is not None and _host_name(headers.get("host", "")) not in self._hosts:
            return PlainTextResponse("unknown host name", status_code=400)
        if scope["method"] not in ALLOWED_METHODS:
            return PlainTextResponse(
                "the status page is read only: GET and HEAD only",
                status_code=405,
                headers={"Allow": ", ".join(ALLOWED_METHODS)},
            )
        if self._token is not None and not self._authorised(headers.get("authorization", "")):
            return PlainTextResponse(
                "a token is needed: Authorization: Bearer TOKEN, or the token as the password",
                status_code=401,
                headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
            )
        return None

    def _authorised(self, header: str) -> bool:
        assert self._token is not None
        scheme, _, credentials = header.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer":
            given: bytes = credentials.encode("utf-8", "replace")
        elif scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                return False
            given = decoded.partition(b":")[2]  # user:password; any user, the token as password
        else:
            return False
        return hmac.compare_digest(_digest(given), self._token)


def _host_name(host: str) -> str:
    """The Host header's name without its port (``[::1]:8080`` -> ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() else host
