"""What stands between a request and the page: methods, hosts, the token, and safe headers.

Reading is GET and HEAD. The one way to change anything is a POST to
``/api/actions/...``, and only when the page has a write token; every other
method and path gets 405 before any route runs. With a token, a request must
carry it: as ``Authorization: Bearer TOKEN`` (programs), or as the password
of HTTP Basic (a browser's login box; the user name is kept only as who acted).
Both are compared in constant time. The write token reads as well; the read
token never writes (403, so a read-only viewer is told why).

A browser sends Basic credentials it has cached with any request to the page,
whichever site asked for it, so an action also needs proof that the page
itself sent it (cross-site request forgery): an ``Origin`` naming this very
host, no ``Sec-Fetch-Site`` other than ``same-origin``, and a JSON body, which
a form on another site cannot send without a preflight the page never grants.

With allowed host names (the command on loopback), a
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
ACTIONS_PATH = "/api/actions/"
"""Where the page's writes live; POST is allowed there only, and only with a write token."""
READ = "read"
WRITE = "write"
ACCESS_KEY = "worksync_access"
"""Where the guard leaves, in the request's state, what its credentials allow."""
WHO_KEY = "worksync_who"
"""Where the guard leaves who sent an action: the Basic user name, or ``web``."""
WHO_MAX = 64
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
        self,
        app: ASGIApp,
        *,
        token: str | None,
        allowed_hosts: Iterable[str] | None,
        write_token: str | None = None,
    ) -> None:
        self.app = app
        # Digests of equal length: the comparison takes the same time whatever was sent.
        self._token = None if token is None else _digest(token)
        self._write_token = None if write_token is None else _digest(write_token)
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
        acting = scope["method"] == "POST" and self._write_token is not None
        acting = acting and str(scope.get("path", "")).startswith(ACTIONS_PATH)
        if scope["method"] not in ALLOWED_METHODS and not acting:
            return PlainTextResponse(
                "the status page is read only: GET and HEAD only"
                if self._write_token is None
                else f"GET and HEAD only, and POST to {ACTIONS_PATH}...",
                status_code=405,
                headers={"Allow": ", ".join(ALLOWED_METHODS)},
            )
        access, who = self._access(headers.get("authorization", ""))
        if access is None:
            return PlainTextResponse(
                "a token is needed: Authorization: Bearer TOKEN, or the token as the password",
                status_code=401,
                headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
            )
        state = scope.setdefault("state", {})
        state[ACCESS_KEY] = access
        state[WHO_KEY] = who
        if acting:
            return _action_refusal(headers, access)
        return None

    def _access(self, header: str) -> tuple[str | None, str]:
        """What the credentials allow (None: not enough to read), and the Basic user name."""
        given, user = _credentials(header)
        # Both digests compared every time: which token matched takes the same time.
        digest = _digest(given) if given is not None else b""
        reads = given is not None and self._token is not None
        reads = reads and hmac.compare_digest(digest, self._token or b"")
        writes = given is not None and self._write_token is not None
        writes = writes and hmac.compare_digest(digest, self._write_token or b"")
        if writes:
            return WRITE, user
        if reads or self._token is None:
            return READ, user
        return None, user


def _credentials(header: str) -> tuple[bytes | None, str]:
    """The secret an Authorization header carries (None: none), and Basic's user name."""
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials.encode("utf-8", "replace"), ""
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True)
        except (binascii.Error, ValueError):
            return None, ""
        user, _, password = decoded.partition(b":")
        return password, user.decode("utf-8", "replace")
    return None, ""


def _action_refusal(headers: Headers, access: str) -> PlainTextResponse | None:
    """Why an action may not run: the wrong token, another site, or not JSON."""
    if access != WRITE:
        return PlainTextResponse(
            "this token only reads: actions need the write token", status_code=403
        )
    origin = headers.get("origin")
    if origin is None or _origin_host(origin) != headers.get("host", "").strip().lower():
        return PlainTextResponse(
            "an action must come from the page itself: its Origin must name this host",
            status_code=403,
        )
    if headers.get("sec-fetch-site", "same-origin").lower() != "same-origin":
        return PlainTextResponse(
            "an action must come from the page itself (Sec-Fetch-Site)", status_code=403
        )
    if headers.get("content-type", "").partition(";")[0].strip().lower() != "application/json":
        return PlainTextResponse("an action's body must be application/json", status_code=415)
    return None


def _origin_host(origin: str) -> str:
    """``host[:port]`` of an Origin header (``null`` and garbage give ``""``)."""
    scheme, sep, rest = origin.strip().lower().partition("://")
    if not sep or scheme not in ("http", "https") or "/" in rest:
        return ""
    return rest


def _host_name(host: str) -> str:
    """The Host header's name without its port (``[::1]:8080`` -> ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() else host
