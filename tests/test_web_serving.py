"""Serving the page in front of slow and numerous clients (``worksync_sa.web.serving``).

The report this answers (issue 21): under ``ulimit -n 1024``, 1,100 half-sent
requests made ``/api/state`` time out, and the log grew by 754,803 lines in
15 s of "socket.accept() out of system resource" tracebacks. The flood test
replays it against a real ``worksync web`` under that limit: the page keeps
answering, the log stays short, and the server closes every half-sent
request by its header deadline. The others drive uvicorn in-process with the
protocol class, one deadline at a time, on each HTTP parser installed, and the
log handler with a pinned clock. Timings are asserted loosely: a deadline is
"closed after at least half of it and well before twice it".
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from .conftest import Backend, Db, _table_on, require
from .extras import skip_module

try:
    import anyio
    import httpx
    import uvicorn
    from starlette.types import Receive, Scope, Send

    from worksync_sa.errors import InvalidConfigError
    from worksync_sa.web import serving
    from worksync_sa.web.serving import CollapsingHandler, ServingLimits, protocol_class
except ModuleNotFoundError as missing:
    skip_module(missing)

SHORT = timedelta(seconds=1)


def parsers() -> list[str]:
    """uvicorn's HTTP parsers installed here: h11 always, httptools if present."""
    return ["h11"] + (["httptools"] if importlib.util.find_spec("httptools") else [])


def base_of(parser: str) -> type[Any]:
    if parser == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    return HttpToolsProtocol


# -- the limits' checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"header_timeout": timedelta(0)}, "header_timeout must be a timedelta from 1s to 1h"),
        ({"body_timeout": timedelta(hours=2)}, "body_timeout must be a timedelta from 1s to 1h"),
        ({"max_connections": 0}, "max_connections must be an int from 1 to 1000000, got 0"),
        ({"max_connections": True}, "max_connections must be an int"),
    ],
)
def test_limits_out_of_range_are_refused_naming_them(given: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        ServingLimits(**given)


def test_the_commands_defaults_are_the_modules() -> None:
    from worksync_sa.cli import web

    assert web.DEFAULT_HEADER_TIMEOUT == serving.DEFAULT_HEADER_TIMEOUT
    assert web.DEFAULT_BODY_TIMEOUT == serving.DEFAULT_BODY_TIMEOUT
    assert web.DEFAULT_MAX_CONNECTIONS == serving.DEFAULT_MAX_CONNECTIONS


def test_only_uvicorns_http_protocols_are_a_base() -> None:
    import asyncio

    with pytest.raises(InvalidConfigError, match="base must be uvicorn's H11Protocol"):
        protocol_class(base=asyncio.Protocol)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--header-timeout", "0.5s"], "header_timeout must be a timedelta from 1s to 1h"),
        (["--body-timeout", "2h"], "body_timeout must be a timedelta from 1s to 1h, got 2h"),
        (["--header-timeout", "soon"], "argument --header-timeout: duration 'soon' is not valid"),
        (["--max-connections", "0"], "argument --max-connections: 0 is not at least 1"),
        (["--max-connections", "many"], "argument --max-connections: 'many' is not a whole number"),
    ],
)
def test_the_command_refuses_bad_limits_in_one_line(
    tmp_path: Any, args: list[str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "worksync_sa", "web", "--db", f"sqlite:///{tmp_path}/x.db", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=command_env(),
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("worksync: ")
    assert message in line


# -- the log handler ---------------------------------------------------------------------


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> list[str]:
        return [record.getMessage() for record in self.records]


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def accept_error(logger: logging.Logger) -> None:
    """What asyncio logs on each failed accept: a message naming the socket, and a traceback."""
    try:
        raise OSError(24, "Too many open files")
    except OSError:
        logger.error(
            "socket.accept() out of system resource\nsocket: <socket fd=6, laddr=...>",
            exc_info=True,
        )


def test_a_storm_is_one_line_then_a_count_each_second() -> None:
    lines, clock = Lines(), Clock()
    collapsing = CollapsingHandler(lines, clock=clock, timer=False)
    logger = logging.getLogger("test_web_serving.storm")
    logger.propagate = False
    logger.addHandler(collapsing)
    try:
        for _ in range(10):  # ten seconds of a storm: 2,000 errors a second
            for _ in range(2000):
                accept_error(logger)
                clock.now += 0.0005
        assert len(lines.records) == 10  # the first, whole, then a count each second
        first, *counts = lines.records
        assert first.exc_info is not None
        assert first.getMessage().startswith("socket.accept() out of system resource")
        for record in counts:
            assert record.exc_info is None
            assert record.levelno == logging.ERROR
            assert record.name == logger.name
            assert re.fullmatch(
                r"socket\.accept\(\) out of system resource: \d+ more like it in the last "
                r"1\.0s, not logged one by one",
                record.getMessage(),
            ), record.getMessage()
        clock.now += 0.5
        collapsing.flush()  # what logging.shutdown does at exit: the last count
        told = [int(re.findall(r": (\d+) more", text)[0]) for text in lines.texts()[1:]]
        assert sum(told) == 20_000 - 1  # every error is either shown or counted
        clock.now += 5  # a quiet while: the next one is shown whole again
        accept_error(logger)
        assert lines.records[-1].exc_info is not None
    finally:
        logger.removeHandler(collapsing)


def test_kinds_are_counted_apart_and_lesser_lines_pass() -> None:
    lines, clock = Lines(), Clock()
    collapsing = CollapsingHandler(lines, clock=clock, timer=False)
    logger = logging.getLogger("test_web_serving.kinds")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(collapsing)
    try:
        for n in range(100):
            logger.warning("shed one at %d", n)
            logger.error("read failed: %s", n)
            logger.info("GET /api/state %d", n)  # the access log: never collapsed
        assert lines.texts()[:3] == ["shed one at 0", "read failed: 0", "GET /api/state 0"]
        assert len(lines.texts()) == 2 + 100
        clock.now += 1
        collapsing.flush()
        assert lines.texts()[-2:] == [
            "shed one at 0: 99 more like it in the last 1.0s, not logged one by one",
            "read failed: 0: 99 more like it in the last 1.0s, not logged one by one",
        ]
    finally:
        logger.removeHandler(collapsing)


def test_a_count_a_storm_left_is_written_within_a_window() -> None:
    lines = Lines()
    collapsing = CollapsingHandler(lines, window=0.2)
    logger = logging.getLogger("test_web_serving.timer")
    logger.propagate = False
    logger.addHandler(collapsing)
    try:
        for _ in range(50):
            logger.warning("the same")
        deadline = time.monotonic() + 10
        while len(lines.records) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lines.texts() == [
            "the same",
            lines.texts()[1],
        ]
        assert re.fullmatch(r"the same: 49 more like it in the last 0\.\ds, .*", lines.texts()[1])
    finally:
        logger.removeHandler(collapsing)
        collapsing.close()


# -- the deadlines and the cap, in-process -----------------------------------------------


@dataclass
class Bodies:
    """What the test app saw: each request's body, or that its client went away."""

    seen: list[str] = field(default_factory=list)

    def heard(self, count: int) -> list[str]:
        """What was seen once ``count`` requests ended: the app hears of a close a turn later."""
        deadline = time.monotonic() + 5
        while len(self.seen) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.seen


def body_app(bodies: Bodies) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        if scope["path"] == "/later":  # an app busy elsewhere before it reads the body
            await anyio.sleep(2.5)
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                bodies.seen.append("disconnected")
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        bodies.seen.append(body.decode() if len(body) < 100 else f"{len(body)} bytes")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


@contextlib.contextmanager
def served(parser: str, limits: ServingLimits, bodies: Bodies) -> Iterator[tuple[str, int]]:
    """uvicorn on a thread with the guarded protocol; its address."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    config = uvicorn.Config(
        body_app(bodies),
        http=protocol_class(limits, base=base_of(parser)),
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: server.run(sockets=[sock]), daemon=True)
    # uvicorn's signal handlers: only on the main thread, which this is not
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started
        yield sock.getsockname()[:2]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def open_with(address: tuple[str, int], data: bytes) -> socket.socket:
    client = socket.create_connection(address, timeout=5)
    if data:
        client.sendall(data)
    return client


def seconds_to_eof(client: socket.socket, since: float, limit: float = 15) -> float:
    """How long after ``since`` the server closed ``client`` (inf: not within ``limit``)."""
    client.settimeout(limit)
    try:
        while client.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return float("inf")
    return time.monotonic() - since


def request(address: tuple[str, int], body: bytes = b"") -> httpx.Response:
    return httpx.post(f"http://{address[0]}:{address[1]}/", content=body, timeout=10)


@pytest.mark.parametrize("parser", parsers())
def test_headers_trickled_in_do_not_extend_their_deadline(parser: str) -> None:
    limits = ServingLimits(header_timeout=SHORT * 2)
    with served(parser, limits, Bodies()) as address:
        start = time.monotonic()
        client = open_with(address, b"GET / HTTP/1.1\r\n")
        with client:
            for piece in (b"Host: a\r\n", b"X-A: 1\r\n", b"X-B: 2\r\n", b"X-C: 3\r\n"):
                time.sleep(0.4)  # a byte now and then, as slowloris sends
                with contextlib.suppress(OSError):
                    client.sendall(piece)
            closed = seconds_to_eof(client, start)
        assert 1.0 <= closed < 4.0, closed
        assert request(address).status_code == 200  # the server itself is fine


@pytest.mark.parametrize("parser", parsers())
def test_a_connection_that_sends_nothing_is_closed_at_the_deadline(parser: str) -> None:
    with served(parser, ServingLimits(header_timeout=SHORT), Bodies()) as address:
        start = time.monotonic()
        with open_with(address, b"") as client:
            closed = seconds_to_eof(client, start)
        assert 0.5 <= closed < 3.0, closed


@pytest.mark.parametrize("parser", parsers())
def test_a_stalled_body_is_closed_and_the_app_hears_of_it(parser: str) -> None:
    bodies = Bodies()
    limits = ServingLimits(header_timeout=SHORT * 30, body_timeout=SHORT)
    with served(parser, limits, bodies) as address:
        head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n"
        start = time.monotonic()
        with open_with(address, head + b"abc") as client:
            for piece in (b"d", b"e"):  # progress, each within the deadline, extends it
                time.sleep(0.6)
                client.sendall(piece)
            closed = seconds_to_eof(client, start)
        assert 1.7 <= closed < 5.0, closed
        assert bodies.heard(1) == ["disconnected"]
        assert request(address, b"0123456789").status_code == 200
        assert bodies.seen == ["disconnected", "0123456789"]


@pytest.mark.parametrize("parser", parsers())
def test_a_body_the_app_is_slow_to_read_is_not_a_stall(parser: str) -> None:
    """Past 64 kB uvicorn stops reading until the app reads: the client is not stalling."""
    bodies = Bodies()
    with served(parser, ServingLimits(body_timeout=SHORT), bodies) as address:
        body = b"x" * 1_000_000
        answer = httpx.post(f"http://{address[0]}:{address[1]}/later", content=body, timeout=20)
        assert answer.status_code == 200
        assert bodies.seen == [f"{len(body)} bytes"]
        # ... and once the app reads on, a client that stalls then is closed all the same.
        head = b"POST /later HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n"
        start = time.monotonic()
        with open_with(address, head + b"x" * 500_000) as client:
            closed = seconds_to_eof(client, start)
        assert 2.5 <= closed < 8, closed
        assert bodies.heard(2)[1:] == ["disconnected"]


@pytest.mark.parametrize("parser", parsers())
def test_a_request_begun_after_an_answer_has_the_header_deadline_again(parser: str) -> None:
    """uvicorn disarms its keep-alive timeout on the first byte: one byte held it for good."""
    limits = ServingLimits(header_timeout=SHORT * 2)
    with served(parser, limits, Bodies()) as address:
        with open_with(address, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") as client:
            answer = client.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200")
            start = time.monotonic()
            client.sendall(b"G")
            closed = seconds_to_eof(client, start)
        assert 1.0 <= closed < 5.0, closed


@pytest.mark.parametrize("parser", parsers())
def test_at_the_cap_a_new_client_is_served_and_the_longest_waiting_closed(parser: str) -> None:
    limits = ServingLimits(header_timeout=SHORT * 30, max_connections=3)
    with served(parser, limits, Bodies()) as address:
        waiting = [open_with(address, b"GET / HT") for _ in range(3)]
        busy: list[socket.socket] = []
        try:
            for n in range(3):  # each newcomer is answered; the oldest waiting gives way
                time.sleep(0.3)  # the last one opened is in
                assert request(address).status_code == 200
                assert seconds_to_eof(waiting[n], time.monotonic(), limit=5) < 5
                waiting.append(open_with(address, b"GET / HT"))  # at the cap again
            # Now one is reading a body: at the cap, a newcomer closes a waiting one, not it.
            head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"
            busy.append(open_with(address, head))
            time.sleep(0.3)
            assert request(address).status_code == 200
            busy[0].sendall(b"123")
            assert busy[0].recv(4096).startswith(b"HTTP/1.1 200")
        finally:
            for client in waiting + busy:
                client.close()


@pytest.mark.parametrize("parser", parsers())
def test_at_the_cap_with_every_connection_busy_a_newcomer_is_refused_at_once(parser: str) -> None:
    limits = ServingLimits(body_timeout=SHORT * 30, max_connections=2)
    head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"
    with served(parser, limits, Bodies()) as address:
        busy = [open_with(address, head) for _ in range(2)]
        try:
            time.sleep(0.3)
            start = time.monotonic()
            with open_with(address, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") as newcomer:
                assert seconds_to_eof(newcomer, start) < 3
            for client in busy:
                client.sendall(b"123")
                assert client.recv(4096).startswith(b"HTTP/1.1 200")
        finally:
            for client in busy:
                client.close()


# -- the report, replayed ----------------------------------------------------------------

DESCRIPTORS = 1024
FLOOD = 1100
HEADER_TIMEOUT = 5.0


def command_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WORKSYNC_")}


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    log: list[tuple[float, str]]
    """Each line the server wrote, with when it was read."""

    def lines_between(self, start: float, end: float) -> list[str]:
        return [line for at, line in self.log if start <= at <= end]


@contextlib.contextmanager
def worksync_web(
    *args: str, descriptors: tuple[int, int] = (DESCRIPTORS, DESCRIPTORS)
) -> Iterator[Server]:
    """``worksync web`` with a soft and hard limit on open files (the report's: 1,024 both)."""

    def lowered() -> None:  # in the child, before exec
        resource.setrlimit(resource.RLIMIT_NOFILE, descriptors)

    process = subprocess.Popen(
        [sys.executable, "-m", "worksync_sa", "web", "--port", "0", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=command_env(),
        preexec_fn=lowered,  # noqa: PLW1509 - no threads matter before exec
    )
    assert process.stderr is not None
    log: list[tuple[float, str]] = []
    found = threading.Event()

    def read() -> None:  # always, so a chatty server never blocks on a full pipe
        assert process.stderr is not None
        for line in process.stderr:
            log.append((time.monotonic(), line))
            if not found.is_set() and "at http://127.0.0.1:" in line:
                found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert found.wait(60), "".join(line for _, line in log)
        start = next(line for _, line in log if "at http://127.0.0.1:" in line)
        url = re.search(r"at (http://127\.0\.0\.1:\d+/)", start)
        assert url is not None
        yield Server(process, url.group(1), log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        reader.join(timeout=10)


def poll(url: str, count: int) -> list[float]:
    """Seconds each of ``count`` fresh requests for ``/api/state`` took (inf: not a 200)."""
    took = []
    for _ in range(count):
        start = time.monotonic()
        try:
            answer = httpx.get(url + "api/state", timeout=30)
            ok = answer.status_code == 200
        except httpx.HTTPError:
            ok = False
        took.append(time.monotonic() - start if ok else float("inf"))
    return took


def half_sent(address: tuple[str, int], count: int) -> list[tuple[socket.socket, float]]:
    """``count`` connections, each with a request begun and never finished."""
    opened = []
    for n in range(count):
        client = socket.socket()
        client.settimeout(5)
        try:
            client.connect(address)
            # half a request line, or a request line and part of the headers
            client.sendall(b"GET /api/st" if n % 2 else b"GET /api/state HTTP/1.1\r\nHost: 1")
        except OSError:  # the server's backlog is full: that is the server's failure
            client.close()
            continue
        client.setblocking(False)
        opened.append((client, time.monotonic()))
    return opened


def closed_by_server(opened: list[tuple[socket.socket, float]], within: float) -> list[float]:
    """For each connection, how long after it opened the server closed it (inf: it did not)."""
    closed = [float("inf")] * len(opened)
    with selectors.DefaultSelector() as selector:
        for n, (client, _) in enumerate(opened):
            selector.register(client, selectors.EVENT_READ, n)
        deadline = time.monotonic() + within
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                n = key.data
                client = opened[n][0]
                try:
                    data = client.recv(4096)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    data = b""
                if not data:
                    closed[n] = time.monotonic() - opened[n][1]
                    selector.unregister(client)
    return closed


@pytest.fixture(params=("sqlite", "postgresql"))
def flood_db(request: pytest.FixtureRequest, _backends: dict[str, Any]) -> Iterator[Db]:
    """SQLite, and one server: the page's reads are not what the flood is about."""
    backend: Backend = require(_backends, request.param)
    yield from _table_on(backend)


@pytest.fixture
def descriptors_for_the_flood() -> Iterator[None]:
    """This process opens the flood: it needs more descriptors than the server has."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = FLOOD + 512
    if soft >= needed:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the flood needs {needed} open files here; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/limits")
@pytest.mark.parametrize(
    ("soft", "hard", "cap"),
    [
        (512, 4096, None),  # raised to 4,096: room for 256 connections, nothing said
        (300, 300, 118),  # (300 - 64) // 2: lowered, with a warning
    ],
)
def test_the_descriptor_limit_is_raised_and_a_cap_it_cannot_hold_lowered(
    tmp_path: Any, soft: int, hard: int, cap: int | None
) -> None:
    import sqlalchemy as sa

    from worksync_sa.models import work_table

    url = f"sqlite:///{tmp_path / 'limits.db'}"
    engine = sa.create_engine(url)
    work_table("works").create(engine)
    engine.dispose()
    with worksync_web("--db", url, descriptors=(soft, hard)) as server:
        limits = Path(f"/proc/{server.process.pid}/limits").read_text()
        assert httpx.get(server.url + "api/state", timeout=10).status_code == 200
    (line,) = [line for line in limits.splitlines() if line.startswith("Max open files")]
    assert line.split()[3:5] == [str(hard), str(hard)]
    log = "".join(line for _, line in server.log)
    if cap is None:
        assert "--max-connections" not in log
    else:
        assert (
            f"--max-connections 256 needs up to 576 open files, more than the limit of {hard}"
            in log
        )
        assert f"serving at most {cap}; raise the limit with ulimit -n" in log


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/PID/fd")
def test_a_flood_of_half_sent_requests_neither_stops_the_page_nor_fills_the_log(
    flood_db: Db, descriptors_for_the_flood: None
) -> None:
    with worksync_web(
        "--db", flood_db.url, "--table", flood_db.table, "--header-timeout", f"{HEADER_TIMEOUT}s"
    ) as server:
        baseline = statistics.median(poll(server.url, 10))
        address = ("127.0.0.1", int(server.url.rsplit(":", 1)[1].strip("/")))
        flood_start = time.monotonic()
        opened = half_sent(address, FLOOD)
        during = poll(server.url, 10)
        held = len(os.listdir(f"/proc/{server.process.pid}/fd"))
        closed = closed_by_server(opened, within=HEADER_TIMEOUT + 15)
        log = server.lines_between(flood_start, time.monotonic())
        for client, _ in opened:
            client.close()
        after = poll(server.url, 3)
    bound = max(2.0, 10 * baseline)
    report = (
        f"baseline {baseline * 1000:.1f} ms; during the flood {[round(t, 3) for t in during]} s; "
        f"{len(opened)} of {FLOOD} opened; server descriptors {held}; "
        f"{len(log)} log lines; slowest close {max(closed):.1f} s"
    )
    print(report)
    assert len(opened) == FLOOD, report
    assert all(took <= bound for took in during), report
    assert all(took <= bound for took in after), report
    assert held < DESCRIPTORS - 100, report  # the cap, not the descriptor table, held them
    assert len(log) < 200, report + "\n" + "".join(log[:50])
    assert not any("out of system resource" in line for line in log), "".join(log[:50])
    # Every half-sent request ends: shed at the cap for a newer one, or at its deadline,
    # and the last ones held are closed by the deadline, not before.
    assert all(seconds < HEADER_TIMEOUT + 10 for seconds in closed), report
    kept = [seconds for seconds in closed if seconds >= HEADER_TIMEOUT * 0.8]
    assert kept, report
    assert server.process.returncode == 0, "".join(line for _, line in server.log)
