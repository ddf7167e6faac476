"""Who claims a row, and the token that fences every later write of that claim."""

from __future__ import annotations

import functools
import random
import secrets
import socket

from .process import pid


@functools.cache
def _host_pid(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}"


class _Tokens:
    """Claim tokens: 128 random bits, unique for all practical purposes.

    A fencing token must not repeat; it need not be secret. A PRNG seeded
    from the OS is as unique as ``secrets`` and spares a system call per
    claim. A forked child reseeds, or it would repeat its parent's tokens.
    """

    def __init__(self) -> None:
        self._pid = -1
        self._random = random.Random()

    def __call__(self) -> str:
        if self._pid != pid():
            self._random.seed(secrets.randbits(128))
            self._pid = pid()
        return f"{self._random.getrandbits(128):032x}"


new_token = _Tokens()


def default_worker_id() -> str:
    """``host:pid``: enough for a person reading the table to find the process."""
    return _host_pid(pid())
