"""The status page as an ASGI app: ``app(engine)`` for a host to mount, or ``worksync web``.

Routes (all GET/HEAD; see :mod:`.guard` for what is refused first):

``/``             the page: every work, the range's summary, timelines, lag charts, history
``/api/state``    the works, summary, timelines and charts as JSON (the live refresh)
``/api/history``  one keyset page of the history, the latest first (``before`` = the
                  previous page's cursor; ``after`` pages forward, earliest first, as before)
``/api/tick``     the rows of one tick (``name``, ``tick``, ``sequence``)
``/metrics``      the ledger of the page's window for Prometheus (:mod:`worksync_sa.metrics`)
``/api/actions/<action>``  POST, with a write token only: pause, resume, run-now, retry
``/static/...``   the page's script and style sheet, from the package

The page and the ``/api`` routes take the same filter (``name``, ``since``,
``until``). The database reads block, so they run in worker threads, at most
a few at once: an open page polling, or a reload storm, never has more than
that many reads on the database at once.

A database error is logged (for whoever runs the server) and answered with a
plain 503 that names nothing: driver messages may carry a host name.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .._sql.text import check_text
from ..errors import InvalidArgumentError
from ..metrics import EXPOSITION_CONTENT_TYPE, LedgerCollector
from ..models import DEFAULT_TABLE, as_utc, validate_table_name
from ..sequences import zone_named
from ..work import Work
from . import render, texts
from .actions import ActionRequest, TooLarge, parse_action, read_body, who
from .config import (
    DEFAULT_MAX_TICKS,
    DEFAULT_PAGE_SIZE,
    DEFAULT_REFRESH,
    DEFAULT_TIMELINE_TICKS,
    DEFAULT_WINDOW,
    PageConfig,
    check_token,
)
from .guard import ACCESS_KEY, ACTIONS_PATH, REALM, WHO_KEY, WRITE, Guard
from .params import MAX_PARAMETER, BadRequest, Filter, parse_instant, read_filter
from .reading import Reader

logger = logging.getLogger(__name__)

T = TypeVar("T")

READERS = 4
"""Most database reads running at once, whatever the number of requests."""
JSON = "application/json"


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def app(
    engine: sa.Engine,
    table: str = DEFAULT_TABLE,
    *,
    auth_token: str | None = None,
    refresh: timedelta = DEFAULT_REFRESH,
    window: timedelta = DEFAULT_WINDOW,
    timeline_ticks: int = DEFAULT_TIMELINE_TICKS,
    page_size: int = DEFAULT_PAGE_SIZE,
    max_ticks: int = DEFAULT_MAX_TICKS,
    allowed_hosts: Iterable[str] | None = None,
    clock: Callable[[], datetime] | None = None,
    sequence_zone: str | None = None,
    works: Iterable[Work] = (),
    write_token: str | None = None,
) -> StatusPage:
    """The read-only status page of ``table`` as an ASGI app, to mount or serve.

    ``auth_token``: if set, every request must carry it (Bearer, or Basic
    with it as the password). ``allowed_hosts``: if set, only these Host
    names are served. ``clock``: where "now" comes from (tests pin it).
    ``sequence_zone``: the zone of the Go original's labels, for the rows no
    scheduler of ours dated (see :class:`~worksync_sa.Ledger`; the page's
    ``/metrics`` reads them alike). ``works``: the fleet's works, whose cron
    the page shows for a work whose rows record none (the original's).
    ``write_token``: if set, a request carrying it may also act (pause,
    resume, run now, retry: :class:`~worksync_sa.Operator`'s actions, POST
    only, from the page itself); without it the page only reads.
    See :class:`PageConfig` for the rest.
    """
    config = PageConfig(
        refresh=refresh,
        window=window,
        timeline_ticks=timeline_ticks,
        page_size=page_size,
        max_ticks=max_ticks,
    )
    return StatusPage(
        engine,
        table,
        auth_token=auth_token,
        config=config,
        allowed_hosts=allowed_hosts,
        clock=clock,
        sequence_zone=sequence_zone,
        works=works,
        write_token=write_token,
    )


class StatusPage:
    """The page's ASGI app: the guard in front of the routes. ``close()`` gives back connections."""

    def __init__(
        self,
        engine: sa.Engine,
        table: str = DEFAULT_TABLE,
        *,
        auth_token: str | None = None,
        config: PageConfig | None = None,
        allowed_hosts: Iterable[str] | None = None,
        clock: Callable[[], datetime] | None = None,
        sequence_zone: str | None = None,
        works: Iterable[Work] = (),
        write_token: str | None = None,
    ) -> None:
        if not isinstance(engine, sa.Engine):
            raise InvalidArgumentError(
                f"engine must be a blocking sqlalchemy Engine, not {type(engine).__name__}; "
                "for an AsyncEngine, give the page an Engine of its own on the same database"
            )
        self.table = validate_table_name(table)
        self.config = config or PageConfig()
        token = None if auth_token is None else check_token(auth_token)
        writer = None if write_token is None else check_token(write_token)
        if writer is not None and writer == token:
            raise InvalidArgumentError(
                "write_token must differ from auth_token: whoever reads would also act"
            )
        self.token_required = token is not None
        self.writable = writer is not None
        self._clock = clock or _utc_now
        if sequence_zone is not None:
            zone_named(sequence_zone, "sequence_zone")  # refused before any connection
        works = tuple(works)
        if not all(isinstance(work, Work) for work in works):
            raise InvalidArgumentError("works must be Work objects")
        self._reader = Reader(
            engine, self.table, self.config, sequence_zone=sequence_zone, works=works
        )
        self._engine = engine
        self._works = works
        # Per event loop: a limiter belongs to the loop it was made in.
        self._limiter = anyio.lowlevel.RunVar[anyio.CapacityLimiter]("worksync_web_readers")
        # The ledger's gauges on a registry of the page's own, read on each scrape; the
        # same guard (methods, host, token, headers) stands in front of it.
        self._metrics = CollectorRegistry(auto_describe=False)
        self._collector = LedgerCollector(
            engine,
            table=self.table,
            window=self.config.window,
            clock=self._clock,
            sequence_zone=sequence_zone,
        )
        self._metrics.register(self._collector)
        routes = [
            Route("/", self._page, methods=["GET"]),
            Route("/api/state", self._state, methods=["GET"]),
            Route("/api/history", self._history, methods=["GET"]),
            Route("/api/tick", self._tick, methods=["GET"]),
            Route("/static/{file}", self._static, methods=["GET"]),
            Route("/metrics", self._scrape, methods=["GET"]),
        ]
        if writer is not None:
            routes.append(Route(f"{ACTIONS_PATH}{{action}}", self._act, methods=["POST"]))
            routes.append(Route(render.SIGN_IN_PATH, self._sign_in, methods=["GET"]))
        self._guarded = Guard(
            Starlette(routes=routes),
            token=token,
            allowed_hosts=allowed_hosts,
            write_token=writer,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._guarded(scope, receive, send)

    def close(self) -> None:
        """Give back the database connections the page holds."""
        self._reader.close()
        self._collector.close()

    def __repr__(self) -> str:
        return f"StatusPage(table={self.table!r})"  # never the engine: its URL has a password

    # -- routes -------------------------------------------------------------------------

    async def _page(self, request: Request) -> Response:
        async def respond(view: Filter, now: datetime) -> Response:
            snapshot = await self._read(self._reader.snapshot, view, now)
            html = render.page(
                snapshot,
                view,
                table=self.table,
                base=_base(request),
                refresh=self.config.refresh,
                access=self._access(request),
            )
            return HTMLResponse(html)

        return await self._answer(request, respond, as_json=False)

    async def _state(self, request: Request) -> Response:
        async def respond(view: Filter, now: datetime) -> Response:
            snapshot = await self._read(self._reader.snapshot, view, now)
            return Response(render.to_json(render.state(snapshot, view)), media_type=JSON)

        return await self._answer(request, respond, as_json=True)

    async def _history(self, request: Request) -> Response:
        async def respond(view: Filter, now: datetime) -> Response:
            page = await self._read(self._reader.history, view, now)
            return Response(render.to_json(render.history(page, view)), media_type=JSON)

        return await self._answer(request, respond, as_json=True)

    async def _tick(self, request: Request) -> Response:
        async def respond(view: Filter, now: datetime) -> Response:
            if view.name is None:
                raise BadRequest("name is required")
            query = request.query_params
            at = parse_instant(query.get("tick", "")[:MAX_PARAMETER], "tick")
            # The label finds another program's rows (no tick time); by default the tick's own.
            given = query.get("sequence", "")
            label = check_text(given, "sequence") if given else at.strftime("%Y-%m-%d %H:%M:%S")
            rows = await self._read(self._reader.tick, view.name, at, label)
            document = render.tick(view.name, at, label, rows, now)
            return Response(render.to_json(document), media_type=JSON)

        return await self._answer(request, respond, as_json=True)

    async def _scrape(self, request: Request) -> Response:
        async def respond(view: Filter, now: datetime) -> Response:
            body = await self._read(generate_latest, self._metrics)
            return Response(body, media_type=EXPOSITION_CONTENT_TYPE)

        return await self._answer(request, respond, as_json=False)

    async def _static(self, request: Request) -> Response:
        asset = render.assets().get(request.path_params["file"])
        if asset is None:
            return PlainTextResponse("not found", status_code=404)
        # The page links each file with its version in the URL, so it may be kept a day.
        return Response(
            asset.body,
            media_type=asset.media_type,
            headers={"Cache-Control": "private, max-age=86400"},
        )

    def _access(self, request: Request) -> render.Access:
        if not self.writable:
            return render.Access.READ_ONLY
        if getattr(request.state, ACCESS_KEY, None) == WRITE:
            return render.Access.WRITE
        return render.Access.READ

    async def _sign_in(self, request: Request) -> Response:
        """Ask the browser for the write token (its login box), then go back to the page.

        A browser that has the read token, or none, sends what it has; the
        challenge makes it ask again, and it then sends the write token with
        every request to the page, so the buttons appear.
        """
        if self._access(request) is render.Access.WRITE:
            return RedirectResponse(f"{_base(request)}/", status_code=303)
        return PlainTextResponse(
            "sign in with the write token as the password (the user name is recorded as who acted)",
            status_code=401,
            headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
        )

    async def _act(self, request: Request) -> Response:
        try:
            body = await read_body(request.stream())
            wanted = parse_action(request.path_params["action"], body)
        except TooLarge as exc:
            return _error(413, str(exc), as_json=True)
        except BadRequest as exc:
            return _error(400, str(exc), as_json=True)
        client = request.client.host if request.client is not None else None
        by = who(str(getattr(request.state, WHO_KEY, "")), client)
        try:
            done = await self._read(self._perform, wanted, by)
        except InvalidArgumentError as exc:  # the Operator's own refusal: nothing written
            return _error(400, str(exc), as_json=True)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            logger.warning(
                "status page: %s of %r failed: %s",
                wanted.action,
                wanted.name,
                exc,
                extra={"action": "web_act_failed"},
            )
            return _error(503, "the database could not be written; see the server's log", True)
        logger.info(
            "status page: %s by %s: %s",
            wanted.action,
            by,
            done,
            extra={"action": f"web_{wanted.action}", "work": wanted.name},
        )
        document = {"action": wanted.action, "name": wanted.name, "done": done}
        return Response(render.to_json(document), media_type=JSON)

    def _perform(self, wanted: ActionRequest, by: str) -> str:
        """Carry out one action through the command line's Operator; what it did, in words."""
        from ..actions import Operator  # noqa: PLC0415 - only a writable page needs it

        operator = Operator(self._engine, table=self.table, by=by, works=self._works)
        name, reason = wanted.name, wanted.reason
        if wanted.action == "pause":
            paused = operator.pause(name, until=wanted.until, reason=reason)
            end = paused.pause.until
            until = "until resumed" if end is None else f"until {texts.moment(end)} UTC"
            return f"paused {until}; {paused.closed} queued row(s) closed"
        if wanted.action == "resume":
            operator.resume(name, reason=reason)
            return "resumed: schedulers make its ticks again from their next pass"
        if wanted.action == "run-now":
            made = operator.run_now(name, reason=reason)
            return f"tick {made.label} made with {made.rows} row(s)"
        assert wanted.action == "retry"
        assert wanted.tick is not None
        retried = operator.retry(name, wanted.tick, past_grace=wanted.past_grace, reason=reason)
        moved = f", moved to {texts.moment(retried.moved_to)} UTC" if retried.moved_to else ""
        return f"tick {retried.label} offered again: {retried.rows} row(s) re-queued{moved}"

    # -- shared -------------------------------------------------------------------------

    async def _answer(
        self,
        request: Request,
        respond: Callable[[Filter, datetime], Awaitable[Response]],
        *,
        as_json: bool,
    ) -> Response:
        """Run ``respond``; bad input is a 400 naming it, a database failure a bare 503."""
        try:
            view = read_filter(request.query_params, self.config.window)
            return await respond(view, as_utc(self._clock()))
        except (BadRequest, InvalidArgumentError) as exc:
            return _error(400, str(exc), as_json)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            logger.warning(
                "status page: reading table %r failed: %s",
                self.table,
                exc,
                extra={"action": "web_read_failed"},
            )
            return _error(503, "the database could not be read; see the server's log", as_json)

    async def _read(self, function: Callable[..., T], *args: object) -> T:
        try:
            limiter = self._limiter.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(READERS)
            self._limiter.set(limiter)
        return await anyio.to_thread.run_sync(lambda: function(*args), limiter=limiter)


def _base(request: Request) -> str:
    """Where the page is mounted (``""`` at the root), for its links to itself."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _error(status: int, message: str, as_json: bool) -> Response:
    if as_json:
        return Response(render.to_json({"error": message}), status_code=status, media_type=JSON)
    return PlainTextResponse(message, status_code=status)
