"""``worksync web``: serve the status page (``worksync_sa.web``) with uvicorn.

Safe by default: it listens on 127.0.0.1, and there it answers only
requests addressed to a loopback name, so a web page elsewhere cannot read
it by pointing a domain of its own at 127.0.0.1. Any other address needs a
token (``--auth-token``, or better ``WORKSYNC_WEB_TOKEN``, which ``ps``
does not show), or an explicit ``--no-auth`` that says the page may be
read by anyone who can reach it. Whatever the address, the page only
reads unless a separate write token is given (``--write-token``, or
``WORKSYNC_WEB_WRITE_TOKEN``): requests carrying that one may also pause,
resume, run now and retry. It never shows the database URL, host or password.

The socket is opened here, before uvicorn starts, so an address in use is
one clear line (exit 1) and ``--port 0`` picks a free port, logged at start.
SIGINT or SIGTERM stop it after the requests in flight (exit 0).

Slow clients cannot hold it (``worksync_sa.web.serving``): request headers
must arrive within ``--header-timeout`` and a body must not stall for
``--body-timeout``; at most ``--max-connections`` are open, the one waiting
longest for a request giving way to a new one; the soft descriptor limit is
raised to the hard one; and a storm of identical warnings is logged once,
then counted once a second.

With ``--config``, its ``[scheduler] sequence_zone`` dates the Go original's
undated rows and its works give the cron of a work whose rows record none,
as for ``worksync status``.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

from .options import (
    Commands,
    Failure,
    Secrets,
    UsageError,
    add_database_options,
    add_logging_options,
    database_url,
    duration_arg,
    open_engine,
    positive_int,
    read_config,
    require_table,
    setup_logging,
    shown,
    table_name,
)
from .status import sequence_zone
from .stopping import StopSignals

if TYPE_CHECKING:  # the web extra is optional: imported when the command runs
    from ..web.app import StatusPage
    from ..web.serving import ServingLimits

log = logging.getLogger("worksync_sa.cli.web")

ENV_TOKEN = "WORKSYNC_WEB_TOKEN"  # noqa: S105 - the variable's name, not a token
ENV_WRITE_TOKEN = "WORKSYNC_WEB_WRITE_TOKEN"  # noqa: S105 - the variable's name, not a token
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_REFRESH = timedelta(seconds=5)
# The page's serving limits (worksync_sa.web.serving's defaults, which need the web extra).
DEFAULT_HEADER_TIMEOUT = timedelta(seconds=10)
DEFAULT_BODY_TIMEOUT = timedelta(seconds=10)
DEFAULT_MAX_CONNECTIONS = 256
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def register(commands: Commands) -> None:
    """Add ``web``."""
    parser = commands.add_parser(
        "web",
        help="serve the status page (needs worksync_sa[web])",
        description="Serve the ledger as a web page: every work's figures, a timeline of its "
        "ticks, start lag over time, and the history, refreshed live. Read only unless "
        f"--write-token (or ${ENV_WRITE_TOKEN}) is given. Listens on "
        f"127.0.0.1 unless --host says otherwise; any other address needs --auth-token (or "
        f"${ENV_TOKEN}) or an explicit --no-auth.",
    )
    add_database_options(
        parser,
        config="config file whose [database] section names the table; its [scheduler] "
        "sequence_zone dates the Go original's labels, its works give their cron",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 for every IPv4 address)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument(
        "--auth-token",
        metavar="TOKEN",
        help=f"require this token (16+ characters): 'Authorization: Bearer TOKEN', or as the "
        f"password of the browser's login (any user name). ${ENV_TOKEN} does the same "
        "without showing the token in `ps`",
    )
    auth.add_argument(
        "--no-auth",
        action="store_true",
        help="serve a non-loopback address without a token: anyone who reaches it reads it",
    )
    parser.add_argument(
        "--write-token",
        metavar="TOKEN",
        help="also let requests carrying this token (16+ characters, not the read token) "
        "pause, resume, run now and retry from the page; without it the page only reads. "
        f"${ENV_WRITE_TOKEN} does the same without showing it in `ps`",
    )
    parser.add_argument(
        "--refresh",
        metavar="DURATION",
        type=duration_arg,
        default=DEFAULT_REFRESH,
        help="how often an open page fetches fresh figures (default 5s)",
    )
    slow = parser.add_argument_group("slow and numerous clients")
    slow.add_argument(
        "--header-timeout",
        metavar="DURATION",
        type=duration_arg,
        default=DEFAULT_HEADER_TIMEOUT,
        help="close a connection whose request headers are not complete this long after it "
        "opened, or after its previous answer (default 10s; 1s to 1h)",
    )
    slow.add_argument(
        "--body-timeout",
        metavar="DURATION",
        type=duration_arg,
        default=DEFAULT_BODY_TIMEOUT,
        help="close a connection whose request body stalls this long (default 10s; 1s to 1h)",
    )
    slow.add_argument(
        "--max-connections",
        metavar="N",
        type=positive_int,
        default=DEFAULT_MAX_CONNECTIONS,
        help=f"most connections open at once (default {DEFAULT_MAX_CONNECTIONS}); at the cap, "
        "the one waiting longest for a request is closed for a new one",
    )
    add_logging_options(parser, default="info")
    parser.set_defaults(runner=run)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0 to 65535)")
    return port


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # another name: it may resolve anywhere
        return False


def auth_token(args: argparse.Namespace) -> str | None:
    """The token from ``--auth-token`` or the environment; refuses a contradiction."""
    from_env = os.environ.get(ENV_TOKEN) or None
    if args.no_auth and from_env is not None:
        raise UsageError(f"--no-auth and ${ENV_TOKEN} contradict each other; drop one")
    token: str | None = args.auth_token if args.auth_token is not None else from_env
    return token


def write_token(args: argparse.Namespace) -> str | None:
    """The write token from ``--write-token`` or the environment (None: the page only reads)."""
    given: str | None = args.write_token
    return given if given is not None else (os.environ.get(ENV_WRITE_TOKEN) or None)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or one clear line of why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise Failure(f"cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise Failure(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def run(args: argparse.Namespace, secrets: Secrets) -> int:
    """Serve the page until SIGINT or SIGTERM."""
    setup_logging(args.log_level, secrets)
    try:  # the web extra is optional: without it, every other command still works
        import uvicorn  # noqa: F401, PLC0415

        from .. import web  # noqa: PLC0415
        from ..web.config import PageConfig, check_token  # noqa: PLC0415
        from ..web.serving import ServingLimits  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        raise Failure(
            f"`worksync web` needs {exc.name}, which is not installed: "
            "pip install 'worksync_sa[web]'"
        ) from None
    token = auth_token(args)
    if token is not None:
        check_token(token)  # the page's own rules; InvalidConfigError is exit 2
    writer = write_token(args)
    if writer is not None:
        check_token(writer)
        if writer == token:
            raise UsageError("the write token must differ from the read token")
    refresh = PageConfig(refresh=args.refresh).refresh  # checked before any connection
    limits = ServingLimits(
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        max_connections=args.max_connections,
    )
    loopback = is_loopback(args.host)
    if not loopback and token is None and not args.no_auth:
        raise UsageError(
            f"--host {args.host} is not a loopback address: pass --auth-token TOKEN (or set "
            f"${ENV_TOKEN}), or --no-auth to let anyone who can reach it read the page"
        )
    config = read_config(args.config)
    url = database_url(args, config, secrets)
    table = table_name(args, config)
    engine = open_engine(url)
    try:
        require_table(engine, table)
        hosts = (*LOOPBACK_NAMES, args.host.strip("[]")) if loopback and token is None else None
        page = web.app(
            engine,
            table,
            auth_token=token,
            refresh=refresh,
            allowed_hosts=hosts,
            sequence_zone=sequence_zone(config),
            works=config.works if config is not None else (),
            write_token=writer,
        )
        try:
            sock = listen(args.host, args.port)
            _serve(page, sock, table, shown(engine.url), args.log_level, limits)
        finally:
            page.close()
    finally:
        engine.dispose()
    return 0


def _serve(
    page: StatusPage,
    sock: socket.socket,
    table: str,
    where: str,
    log_level: str,
    limits: ServingLimits,
) -> None:
    """Run uvicorn on the bound socket until a stop signal."""
    import uvicorn  # noqa: PLC0415 - present: run() checked

    from ..web.serving import (  # noqa: PLC0415
        collapse_root_warnings,
        gated_socket,
        protocol_class,
        raise_descriptor_limit,
    )

    try:
        collapse_root_warnings()
        limits = _within_descriptors(limits, raise_descriptor_limit())
        protocol = protocol_class(limits)
        sock = gated_socket(sock, protocol)
        host, port = sock.getsockname()[:2]
        log.info(
            "status page of table %r on %s at http://%s:%d/ (%s); Ctrl-C to stop",
            table,
            where,
            f"[{host}]" if ":" in host else host,
            port,
            "token required" if page.token_required else "no token",
            extra={"action": "serving"},
        )
        server = uvicorn.Server(
            uvicorn.Config(
                page,
                log_config=None,  # uvicorn's lines go through our masking handler
                log_level=log_level,
                lifespan="off",
                server_header=False,
                proxy_headers=False,
                http=protocol,
                ws="none",  # the page has no websocket: an upgrade is a plain request
                loop="asyncio",  # the gate counts at asyncio's accept (uvloop's is its own)
            )
        )
        # uvicorn stops gracefully on the first SIGINT/SIGTERM, then raises the signal
        # again for the handler it found: ours records it, so a stop is exit 0, as for
        # the other long-running commands (and a second signal quits at once, exit 1).
        with StopSignals():
            server.run(sockets=[sock])
    finally:
        sock.close()


def _within_descriptors(limits: ServingLimits, descriptors: int | None) -> ServingLimits:
    """``limits`` with a cap the descriptor limit can hold, saying so if it had to be lowered.

    A connection closed at the cap gives its descriptor back a turn of the loop after its
    replacement took one, so the cap may need two descriptors a connection for a moment.
    """
    from ..web.serving import DESCRIPTORS_RESERVED  # noqa: PLC0415

    if descriptors is None:
        return limits
    fits = (descriptors - DESCRIPTORS_RESERVED) // 2
    if limits.max_connections <= fits:
        return limits
    if fits < 1:
        raise Failure(
            f"the limit on open files ({descriptors}) leaves no room for connections: "
            "raise it (ulimit -n)"
        )
    log.warning(
        "--max-connections %d needs up to %d open files, more than the limit of %d allows "
        "(%d kept for the rest): serving at most %d; raise the limit with ulimit -n",
        limits.max_connections,
        2 * limits.max_connections + DESCRIPTORS_RESERVED,
        descriptors,
        DESCRIPTORS_RESERVED,
        fits,
        extra={"action": "web_connections_lowered"},
    )
    return replace(limits, max_connections=fits)
