"""What a worker's wake-up listener decides, written once for ``Worker`` and ``AsyncWorker``.

A worker sleeps until its works' next cron tick, but no longer than ``poll``:
polling is what finds rows due outside the ticks it knows (an operator's
run-now or retry, ticks a scheduler makes late). On PostgreSQL the writers of
such rows also notify the table's channel (``_sql.wakeups``), so a worker
that listens there can poll rarely and still start them at once.

The listener is a loop of steps (``_run.listen``) driven by a thread or a
task: connect and ``LISTEN``, prove that notifies really arrive (a probe sent
through the worker's own engine must come back: behind PgBouncer in
transaction pooling it never does), then wake the worker for every notify
that names one of its works. A lost connection is logged once per outage and
reconnected with capped backoff; while it is down the worker polls at its
short poll, and after reconnecting it looks once (notifies are not queued
for a listener that is away). It must not decide whether a row is due: the
worker's claim statement does, as always.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Generator
from datetime import timedelta
from typing import Any, Literal

import sqlalchemy as sa

from .._run.listen import (
    CONNECT,
    DISCONNECT,
    NUDGE,
    Pause,
    Probe,
    Receive,
)
from .._sql.wakeups import names_in
from ..errors import InvalidArgumentError
from .outage import Outage

logger = logging.getLogger("worksync_sa.worker")

NOTIFY = "notify"
WAKES = (None, NOTIFY)
DEFAULT_LISTENING_POLL = timedelta(seconds=60)
"""The longest wait between looks while wake-ups are heard: a safety net, not the way in."""
PROBE_SECONDS = 2.0
"""How long the listener waits for its own probe before it decides notifies cannot reach it."""

Wakeups = Literal["checking", "listening", "polling"]
PSYCOPG = ("psycopg", "psycopg_async")
"""The drivers the listener reads notifies from (psycopg 3's libpq connection)."""


def checked_wake(wake: object) -> str | None:
    """``wake`` as given, if it is one this version knows."""
    if wake not in WAKES:
        raise InvalidArgumentError(
            f"wake must be None or 'notify' (PostgreSQL LISTEN/NOTIFY), got {wake!r}"
        )
    return None if wake is None else NOTIFY


def check_wake_database(wake: str | None, dialect: str, driver: str, listen_url: object) -> None:
    """Refuse wake-ups where nothing would notify, before anything is written or started."""
    if wake is None:
        if listen_url is not None:
            raise InvalidArgumentError(
                "listen_url is only for wake='notify': pass both, or neither"
            )
        return
    if dialect != "postgresql":
        raise InvalidArgumentError(
            f"wake='notify' needs PostgreSQL (LISTEN/NOTIFY); this engine is {dialect!r}: "
            "leave wake unset and the worker polls"
        )
    if driver not in PSYCOPG:
        raise InvalidArgumentError(
            f"wake='notify' listens with psycopg 3; this engine's driver is {driver!r}: "
            "use a postgresql+psycopg:// URL"
        )
    if listen_url is None:
        return
    if not isinstance(listen_url, str):
        raise InvalidArgumentError(
            f"listen_url must be a URL string, not {type(listen_url).__name__}"
        )
    try:
        url = sa.make_url(listen_url)
    except sa.exc.ArgumentError:
        raise InvalidArgumentError("listen_url is not a database URL") from None
    if url.get_backend_name() != "postgresql" or url.get_driver_name() not in PSYCOPG:
        raise InvalidArgumentError(
            f"listen_url must be a postgresql+psycopg:// URL (LISTEN with psycopg 3), "
            f"not {url.drivername}://"
        )


def wakeups_for(
    wake: object, poll: float | None, short: float, max_backoff: float
) -> WakeupsCore | None:
    """The listener's core for ``wake`` ("notify"), or None; ``poll``: the user's, if given.

    Heard notifies allow a long poll (60 s unless given); unheard, the worker
    polls as it would without them (``short``: 1 s unless given).
    """
    if checked_wake(wake) is None:
        return None
    long = DEFAULT_LISTENING_POLL.total_seconds() if poll is None else poll
    return WakeupsCore(long=long, short=short, max_backoff=max_backoff)


class WakeupsCore:
    """One worker's listener: its state, and the poll the worker's idle wait may last.

    ``poll`` is ``long`` while notifies are heard, ``short`` otherwise
    (checking, reconnecting, or given up): a worker that cannot hear must poll.
    """

    def __init__(self, *, long: float, short: float, max_backoff: float) -> None:
        self.long = long
        self.short = short
        self.max_backoff = max_backoff
        self.state: Wakeups = "checking"
        self.poll = short
        """The worker's longest wait now (its core reads this as ``poll``)."""

    def concerns(self, payload: str, names: frozenset[str]) -> bool:
        """Whether a notify should make this worker look: it names one of its works, or any."""
        named = names_in(payload)
        return named is None or not named.isdisjoint(names)

    def _set(self, state: Wakeups) -> None:
        self.state = state
        self.poll = self.long if state == "listening" else self.short

    def listen_steps(self, what: str, names: frozenset[str]) -> Generator[Any, Any, None]:
        """The listener's loop until stopped (``Receive`` or ``Pause`` answers it).

        Only a stop ends it, or a probe that never came back: then the worker
        polls for good, and the log says why and what to change. The state is
        "checking" from this call on (not from the first step): a worker
        started again checks again, and says so at once.
        """
        self._set("checking")
        return self._listen_steps(what, names)

    def _listen_steps(self, what: str, names: frozenset[str]) -> Generator[Any, Any, None]:
        outage = Outage(logger, f"{what} wake-up listener", cap=self.max_backoff)
        while True:
            try:
                yield CONNECT
                token = f"probe {secrets.token_hex(8)}"
                yield Probe(token)
                heard = yield from self._heard(token, names)
                if heard is None:
                    return
                if not heard:
                    self._give_up(what)
                    yield DISCONNECT
                    yield NUDGE  # the worker's wait was for the long poll: shorten it now
                    return
                outage.succeeded()
                self._set("listening")
                yield NUDGE  # notifies sent while no one listened are lost: look once
                while True:
                    payloads = yield Receive(None)
                    if payloads is None:
                        return
                    if any(self.concerns(p, names) for p in payloads):
                        yield NUDGE  # a burst is one look: the worker's wake is an event
            except GeneratorExit:
                raise
            except Exception as exc:  # the listening connection is gone: poll until it is back
                was = self.state
                self._set("polling")
                yield DISCONNECT
                if was == "listening":
                    yield NUDGE
                if (yield Pause(outage.failed(exc))):
                    return

    def _heard(self, token: str, names: frozenset[str]) -> Generator[Any, Any, bool | None]:
        """Whether the probe came back in time; None: stopped meanwhile."""
        deadline = time.monotonic() + PROBE_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            payloads = yield Receive(left)
            if payloads is None:
                return None
            if any(self.concerns(p, names) for p in payloads if p != token):
                yield NUDGE
            if token in payloads:
                return True
        return False

    def _give_up(self, what: str) -> None:
        self._set("polling")
        logger.warning(
            "%s: wake-ups are off, polling every %g s: the listening connection did not hear "
            "its own probe within %g s. LISTEN needs a session of its own, which PgBouncer in "
            "transaction (or statement) pooling does not keep: pass listen_url= with a URL "
            "of PostgreSQL itself or of a session-mode pool",
            what,
            self.short,
            PROBE_SECONDS,
            extra={"action": "wakeups-off"},
        )
