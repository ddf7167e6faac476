"""Serving the page in front of slow and numerous clients: deadlines, a cap, a quiet log.

uvicorn (0.29 to 0.55 read) times out only a keep-alive connection left idle
after a response, and it disarms even that on the first byte that arrives. A
connection that sends part of a request line, its headers a byte at a time, or
half a body and then nothing, is held for good, and so is its file
descriptor. A thousand of them exhaust the descriptor table; asyncio then
logs "socket.accept() out of system resource" with a traceback on each
accept it retries (up to the listen backlog's length per turn of the loop),
and the page stops answering whoever else asks.

:func:`protocol_class` makes, for uvicorn's ``Config(http=...)``, a subclass
of its own HTTP protocol (httptools' when installed, h11's otherwise) that
adds, from :class:`ServingLimits`:

* a header deadline: a connection must complete its request headers within
  ``header_timeout`` of opening, or of its previous response; bytes trickled
  in do not extend it.
* a body deadline: a request body must not stall for ``body_timeout``
  (while the application is not reading it, the deadline waits a period more).
* a cap of ``max_connections`` open connections. At the cap, a new
  connection closes the one that has waited longest for a request (a slow
  client's, or an idle keep-alive one), as nginx reuses its idle ones; if
  every connection is busy with a request, the new one is closed at once. An
  answering client sends its request the moment it connects, so a flood of
  half-sent requests does not keep it out.

A closed connection writes nothing back: a slow client gets end of file.
:class:`CollapsingHandler` keeps a storm of identical warnings (asyncio's
accept errors, or the cap's) to one line and then a count each second, and
:func:`raise_descriptor_limit` lifts the soft descriptor limit to the hard
one, so the cap, not the table, is what applies.

Known limits: a client that stops reading a large response holds its
connection until the response is written (the page's answers fit the
kernel's buffers); a connection upgraded to a websocket leaves the count.
Importing this module needs no uvicorn; :func:`protocol_class` does.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from ..durations import shown
from ..errors import InvalidConfigError

if TYPE_CHECKING:  # the mixin is typed against h11's protocol; httptools' has the same names
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base
else:
    _Base = object

log = logging.getLogger(__name__)

DEFAULT_HEADER_TIMEOUT = timedelta(seconds=10)
DEFAULT_BODY_TIMEOUT = timedelta(seconds=10)
DEFAULT_MAX_CONNECTIONS = 256
DESCRIPTORS_RESERVED = 64
"""Descriptors kept for everything but client connections: the database pool, logs, imports."""
SHORTEST, LONGEST = timedelta(seconds=1), timedelta(hours=1)
MOST_CONNECTIONS = 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class ServingLimits:
    """How long a client may take to send a request, and how many may be connected at once."""

    header_timeout: timedelta = DEFAULT_HEADER_TIMEOUT
    """From a connection's start, or its previous response, to its request headers' end."""
    body_timeout: timedelta = DEFAULT_BODY_TIMEOUT
    """The longest a request body may stall between two reads."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Most connections open at once; at the cap the longest waiting for a request is closed."""

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout"):
            span = getattr(self, name)
            if not isinstance(span, timedelta) or not SHORTEST <= span <= LONGEST:
                raise InvalidConfigError(
                    f"{name} must be a timedelta from {shown(SHORTEST)} to {shown(LONGEST)}, "
                    f"got {shown(span)}"
                )
        count = self.max_connections
        if (
            not isinstance(count, int)
            or isinstance(count, bool)
            or not 1 <= count <= MOST_CONNECTIONS
        ):
            raise InvalidConfigError(
                f"max_connections must be an int from 1 to {MOST_CONNECTIONS}, got {count!r}"
            )


class _Phase(enum.Enum):
    HEADERS = "waiting for request headers"
    BODY = "reading a request body"
    APP = "answering"


class _Room(enum.Enum):
    YES = "room, or made by closing the connection waiting longest"
    LATER = "none yet: the connections just accepted are not counted until their next turn"
    NO = "none: every connection is answering a request"


class _Connections:
    """The connections of one server: how many are open, and which wait for a request."""

    def __init__(self, limits: ServingLimits) -> None:
        self.limits = limits
        self.open = 0
        # Insertion-ordered: the first is the one that has waited longest for its headers.
        self.waiting: dict[_Guarded, None] = {}
        self.accepted: set[int] = set()
        """Descriptors the gate accepted whose protocol is not made yet (a turn of the loop
        later). A failure in between leaves a number here until the kernel reuses it."""

    def make_room(self) -> _Room:
        """Whether one more may open, after closing the longest waiting if the cap is reached."""
        if self.open + len(self.accepted) < self.limits.max_connections:
            return _Room.YES
        if self.waiting:
            log.warning(
                "%d connections open, the most allowed: closed the one waiting longest for "
                "a request",
                self.limits.max_connections,
                extra={"action": "web_connection_shed"},
            )
            next(iter(self.waiting))._close("shed at the connection cap")
            return _Room.YES
        if self.accepted:  # a burst: what it brought may be closed once it is counted
            return _Room.LATER
        log.warning(
            "%d connections open, the most allowed, all answering: refused a new one",
            self.limits.max_connections,
            extra={"action": "web_connection_refused"},
        )
        return _Room.NO

    def admit(self, transport: asyncio.Transport) -> bool:
        """Count a new connection in; False if there is no room for it."""
        sock = transport.get_extra_info("socket")
        fd = -1 if sock is None else sock.fileno()
        if fd in self.accepted:  # the gate made room for it already
            self.accepted.discard(fd)
        elif self.make_room() is not _Room.YES:  # a socket without the gate: room only now
            return False
        self.open += 1
        return True


class _Guarded(_Base):
    """Deadlines and the cap, over uvicorn's protocol (see :func:`protocol_class`)."""

    _connections: ClassVar[_Connections]
    _timer: asyncio.TimerHandle | None = None
    _phase: _Phase | None = None
    _counted = False
    """True from admission to release: while the connection is one of the open ones."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self._connections.admit(transport):
            transport.abort()  # connection_lost follows; nothing was counted
            return
        self._counted = True
        self._follow(data=False)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow(data=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow(data=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        super().connection_lost(exc)

    def _follow(self, *, data: bool) -> None:
        """Arm the deadline of the phase the request is in, after each event that may move it."""
        if not self._counted:
            return
        if self.transport.get_protocol() is not self:  # upgraded: no longer ours to watch
            self._release()
            return
        limits = self._connections.limits
        phase = self._current()
        waiting = self._connections.waiting
        if phase is _Phase.HEADERS:
            if self._phase is not _Phase.HEADERS:  # a new wait: its deadline is fixed from now
                waiting.pop(self, None)
                waiting[self] = None
                self._arm(limits.header_timeout, phase)
        else:
            waiting.pop(self, None)
            if phase is _Phase.BODY and (data or self._phase is not _Phase.BODY):
                self._arm(limits.body_timeout, phase)
            elif phase is _Phase.APP:
                self._disarm()
        self._phase = phase

    def _current(self) -> _Phase:
        cycle: Any = self.cycle  # either implementation's RequestResponseCycle
        if cycle is None or cycle.response_complete:
            return _Phase.HEADERS
        if cycle.more_body:
            return _Phase.BODY
        return _Phase.APP

    def _arm(self, timeout: timedelta, phase: _Phase) -> None:
        self._disarm()
        self._timer = self.loop.call_later(timeout.total_seconds(), self._expire, phase)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, phase: _Phase) -> None:
        self._timer = None
        if self._phase is not phase or self._current() is not phase:
            return
        if phase is _Phase.BODY and self.flow.read_paused:
            # The app is not reading (its buffer is full), so no byte can come: not the
            # client's stall. Nothing tells the protocol when the app reads on: look again.
            self._arm(self._connections.limits.body_timeout, phase)
            return
        self._close(f"timed out {phase.value}")

    def _close(self, why: str) -> None:
        log.debug("closed a connection from %s: %s", self.client, why)
        self._release()
        # abort: nothing buffered is worth waiting for, and close() would wait for a
        # client that does not read. The client reads end of file.
        self.transport.abort()

    def _release(self) -> None:
        self._disarm()
        if self._counted:
            self._counted = False
            self._connections.waiting.pop(self, None)
            self._connections.open -= 1


def protocol_class(
    limits: ServingLimits | None = None, *, base: type[asyncio.Protocol] | None = None
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with ``limits``, for ``uvicorn.Config(app, http=...)``.

    Each call makes a new class with a count of its own: one per server. ``base``:
    uvicorn's h11 or httptools protocol class (default: the one ``http="auto"``
    would use). Mounting the page in a uvicorn of your own, pass this as ``http``.
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol  # noqa: PLC0415 - the web extra
    from uvicorn.protocols.http.h11_impl import H11Protocol  # noqa: PLC0415

    chosen = AutoHTTPProtocol if base is None else base
    known: tuple[type[asyncio.Protocol], ...] = (H11Protocol,)
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: PLC0415
    except ImportError:  # httptools is not installed
        pass
    else:
        known = (*known, HttpToolsProtocol)
    if not (isinstance(chosen, type) and issubclass(chosen, known)):
        raise InvalidConfigError(
            f"base must be uvicorn's H11Protocol or HttpToolsProtocol, got {chosen!r}"
        )
    connections = _Connections(limits or ServingLimits())
    name = f"Guarded{chosen.__name__}"
    made: type[asyncio.Protocol] = type(name, (_Guarded, chosen), {"_connections": connections})
    return made


class _GatedSocket(socket.socket):
    """A listening socket that accepts a connection only when its protocol's cap has room.

    asyncio's selector loop accepts up to the listen backlog's length (uvicorn:
    2,048) in one turn, before any protocol can count them, so a burst could
    take every descriptor there and then; counting at the accept keeps the
    cap a real bound. At the cap, a burst's newcomers wait in the kernel's
    queue until those accepted before them are counted (a turn or two), so
    that they can give way in turn; with every connection busy answering, a
    newcomer is accepted and closed at once, since left queued it would wake
    the loop again and again. asyncio's proactor loop (Windows) and uvloop do not call this;
    the protocol's own count still applies there, one turn later.
    """

    _connections: _Connections

    def accept(self) -> tuple[socket.socket, Any]:
        while True:
            room = self._connections.make_room()
            if room is _Room.LATER:  # leave the queue to the kernel until the next turn
                raise BlockingIOError(errno.EAGAIN, "at the connection cap")
            conn, address = super().accept()  # none left: BlockingIOError ends asyncio's loop
            if room is _Room.YES:
                self._connections.accepted.add(conn.fileno())
                return conn, address
            conn.close()


def gated_socket(sock: socket.socket, protocol: type[asyncio.Protocol]) -> socket.socket:
    """``sock`` (listening), taken over by one that accepts within ``protocol``'s cap.

    ``protocol`` is a class from :func:`protocol_class`; hand the result to
    ``uvicorn.Server.run(sockets=[...])`` with ``Config(http=protocol, loop="asyncio")``.
    ``sock`` is detached: close the returned socket instead.
    """
    connections = getattr(protocol, "_connections", None)
    if not isinstance(connections, _Connections):
        raise InvalidConfigError("protocol must be a class made by protocol_class()")
    gated = _GatedSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    gated._connections = connections
    return gated


def raise_descriptor_limit() -> int | None:
    """Lift the soft limit on open files to the hard one; the limit now (None: unknown).

    Without this, a host's default of 1,024 would be the cap rather than
    ``max_connections``; the hard limit is the most an unprivileged process may ask.
    """
    try:
        import resource  # noqa: PLC0415 - Unix only
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard not in (resource.RLIM_INFINITY, soft):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # a sandbox may refuse: keep the soft one
            pass
    return None if soft == resource.RLIM_INFINITY else soft


@dataclass
class _Tally:
    shown: str
    """The first line of the message of the first of its kind, as logged."""
    reported_at: float
    last_seen: float
    suppressed: int = 0


class CollapsingHandler(logging.Handler):
    """Passes warnings to ``target`` once, then counts repeats into one line per ``window``.

    Repeats are records of the same logger, level and message template (its
    first line: asyncio's names the socket after it). Records below WARNING
    pass untouched (the access log, for one). A kind quiet for a whole window
    is logged in full again. The counts left when logging shuts down are
    written by :meth:`flush`. ``clock`` is where time comes from (tests pin it);
    with ``timer``, a thread reports counts a storm left behind within a window.
    """

    MOST_KINDS = 200
    """Kinds tracked at once; past that, every new kind is counted as one."""

    def __init__(
        self,
        target: logging.Handler,
        *,
        window: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        timer: bool = True,
    ) -> None:
        super().__init__()
        self.target = target
        self.window = window
        self._clock = clock
        self._timer = timer
        self._tallies: dict[tuple[str, int, str], _Tally] = {}
        self._pending: threading.Timer | None = None
        self._lock_tallies = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING:
            self.target.handle(record)
            return
        with self._lock_tallies:
            key = self._kind(record)
            now = self._clock()
            report = self._due(now)
            tally = self._tallies.get(key)
            if tally is None:  # the first of its kind, or the first after a quiet window
                first = record.getMessage().partition("\n")[0]
                self._tallies[key] = _Tally(shown=first, reported_at=now, last_seen=now)
                report.append(record)
            else:
                tally.suppressed += 1
                tally.last_seen = now
                self._schedule()
        for line in report:
            self.target.handle(line)

    def flush(self) -> None:
        """Write every count not yet written (logging calls this at exit)."""
        with self._lock_tallies:
            report = self._due(self._clock(), force=True)
        for line in report:
            self.target.handle(line)
        self.target.flush()

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        super().close()

    def _kind(self, record: logging.LogRecord) -> tuple[str, int, str]:
        key = (record.name, record.levelno, str(record.msg).partition("\n")[0])
        if key not in self._tallies and len(self._tallies) >= self.MOST_KINDS:
            return ("", record.levelno, "other repeated warnings")
        return key

    def _due(self, now: float, *, force: bool = False) -> list[logging.LogRecord]:
        """The count lines due at ``now``; forgets the kinds a whole window left quiet."""
        lines: list[logging.LogRecord] = []
        for key, tally in list(self._tallies.items()):
            elapsed = now - tally.reported_at
            if tally.suppressed and (force or elapsed >= self.window):
                name, level, _ = key
                lines.append(self._count_line(name, level, tally.shown, tally.suppressed, elapsed))
                tally.suppressed, tally.reported_at = 0, now
            if not tally.suppressed and now - tally.last_seen >= self.window:
                del self._tallies[key]
        return lines

    def _count_line(
        self, name: str, level: int, text: str, count: int, elapsed: float
    ) -> logging.LogRecord:
        line = logging.LogRecord(
            name,
            level,
            __file__,
            0,
            "%s: %d more like it in the last %.1fs, not logged one by one",
            (text, count, elapsed),
            None,
        )
        line.action = "log_collapsed"
        return line

    def _schedule(self) -> None:
        """With the lock held: make sure a count left by a storm that stopped is written."""
        if not self._timer or (self._pending is not None and self._pending.is_alive()):
            return
        self._pending = threading.Timer(self.window, self._tick)
        self._pending.daemon = True
        self._pending.start()

    def _tick(self) -> None:
        with self._lock_tallies:
            report = self._due(self._clock())
            self._pending = None
            if any(tally.suppressed for tally in self._tallies.values()):
                self._schedule()
        for line in report:
            self.target.handle(line)


def collapse_root_warnings(window: float = 1.0) -> None:
    """Put a :class:`CollapsingHandler` in front of each handler of the root logger."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if not isinstance(handler, CollapsingHandler):
            root.removeHandler(handler)
            root.addHandler(CollapsingHandler(handler, window=window))
