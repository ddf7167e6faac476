"""Handlers that tests/test_process_mode.py runs with ``isolation="process"``.

A module of their own, with nothing but the standard library: each claim's
child process imports its handler by name, and importing the test module
instead would bring pytest, the fixtures and every database driver into
every child's start. Each handler notes its pid (and what it was given) in
the folder ``$WORKSYNC_TEST_PIDS`` names, so a test can look for the process
afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

FOLDER = "WORKSYNC_TEST_PIDS"


def _note(view: Any) -> None:
    folder = os.environ.get(FOLDER)
    if folder:
        fields = {
            "pid": os.getpid(),
            "id": view.id,
            "name": view.name,
            "sequence": view.sequence,
            "slot": view.slot,
            "tick_at": None if view.tick_at is None else view.tick_at.isoformat(),
            "attempt": view.attempt,
            "worker_id": view.worker_id,
        }
        Path(folder, f"{view.name}-{view.id}.json").write_text(json.dumps(fields))


def returns(view: Any) -> str:
    _note(view)
    return "ignored, as in thread mode"


def raises(view: Any) -> None:
    _note(view)
    raise ValueError("it broke")


def exits(view: Any) -> None:
    _note(view)
    os._exit(3)


def segfaults(view: Any) -> None:
    _note(view)
    os.kill(os.getpid(), signal.SIGSEGV)


def spins(view: Any) -> None:
    """Hangs busy on the CPU, never waiting on anything a thread could be woken from."""
    _note(view)
    while True:
        pass


def sleeps(view: Any) -> None:
    _note(view)
    time.sleep(3600)


def sleeps_briefly(view: Any) -> None:
    _note(view)
    time.sleep(0.2)
