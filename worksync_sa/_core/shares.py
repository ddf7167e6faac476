"""Which work a worker with several runners claims for next: the one that ran least lately.

Taking turns one claim each is fair by count, not by time. Beside handlers that
hold a runner for seconds (a slow job, or a hung one until its timeout), a quick
work got one claim per turn while every runner it freed went straight to the
slow works: with two runners, two works hung until a 2 s timeout and a
per-second work beside them, that work got a claim every 2 s and missed ticks.

So the next claim goes to the due work that has used the least runner time
lately (least attained service): a work of quick handlers drains its due ticks
first, and slow works share what is left. Time used decays by half every
minute, so a work that was slow an hour ago is not held back for good. A claim
is charged, when it starts, what the work's claims usually take (an average),
and set right when it ends: works of equal cost then take turns within a round.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

HALF_LIFE_SECONDS = 60.0
"""How fast runner time used is forgotten: half of it every minute."""
SMALLEST_CHARGE = 1e-3
"""What a claim is charged at its start at least, so equal works alternate."""
_AVERAGE_WEIGHT = 0.2
"""The weight of the latest claim in a work's average duration."""


class Shares:
    """Runner time used per work, decayed; safe to update from the runners' threads."""

    def __init__(self, names: Iterable[str], clock: Callable[[], float] = time.monotonic) -> None:
        self._used = dict.fromkeys(names, 0.0)
        self._usual = dict.fromkeys(self._used, 0.0)
        self._clock = clock
        self._at = clock()
        self._lock = threading.Lock()

    def next(self, due: list[str]) -> str:
        """The work among ``due`` (in their order on ties) that has used the least lately."""
        with self._lock:
            self._decay()
            return min(due, key=self._used.__getitem__)

    def places(self, names: Iterable[str]) -> dict[str, int]:
        """Each of ``names``' place, least used first (their order on ties): a look's order."""
        with self._lock:
            self._decay()
            ordered = sorted(names, key=self._used.__getitem__)
            return {name: place for place, name in enumerate(ordered)}

    def started(self, name: str) -> float:
        """Charge a claim of ``name`` what its claims usually take; returns the charge."""
        with self._lock:
            charge = max(self._usual[name], SMALLEST_CHARGE)
            self._used[name] += charge
            return charge

    def ended(self, name: str, charged: float, seconds: float) -> None:
        """A claim of ``name`` that was ``charged`` at its start held its runner ``seconds``."""
        with self._lock:
            self._decay()
            self._used[name] = max(0.0, self._used[name] - charged + seconds)
            usual = self._usual[name]
            self._usual[name] = usual + _AVERAGE_WEIGHT * (seconds - usual)

    def used(self, name: str) -> float:
        """Runner seconds ``name`` used lately (decayed)."""
        with self._lock:
            self._decay()
            return self._used[name]

    def _decay(self) -> None:
        now = self._clock()
        elapsed = now - self._at
        if elapsed <= 0:
            return
        factor = 0.5 ** (elapsed / HALF_LIFE_SECONDS)
        for name in self._used:
            self._used[name] *= factor
        self._at = now
