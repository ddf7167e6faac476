"""This process's id, without a system call each time it is asked.

Lanes, claim tokens and the default worker id all need to notice a fork
(a child must not reuse its parent's connections or random stream). Asking
the kernel for the pid on every claim costs a system call each time; the pid
only changes at fork, so it is cached and refreshed by a fork hook.
"""

from __future__ import annotations

import os

_pid = os.getpid()


def _after_fork() -> None:
    global _pid  # noqa: PLW0603 - the one value a fork hook exists to update
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def pid() -> int:
    """The current process id, refreshed in a forked child."""
    return _pid
