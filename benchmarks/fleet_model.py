"""The fleet's cost model, fitted from measured cases (pure: no database, no clock).

A fleet of W workers on M per-second works costs the server, per second (one
tick of every work):

    statements/s = constant + per_worker * W + per_look * W * M + per_claim * C

where C is the claims per second (M for per-second works of ``max_run`` 1).
``per_look`` is what a worker pays for each of its works on every look (today
one ``acquire_due`` per work), ``per_worker`` what it pays per look whatever
its works, ``per_claim`` what a claim adds (the claim, its finish, the second
round a winner runs), and ``constant`` the scheduler's passes. The
coefficients are fitted by least squares over the measured cases of one
system that kept up with their ticks, idle fleets included (C = 0), with none
allowed below zero: a term the data cannot support is dropped rather than
fitted negative.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TERMS = ("constant", "per_worker", "per_look", "per_claim")


@dataclass(frozen=True)
class Case:
    """One measured case: the fleet's size and what the server counted per second."""

    workers: int
    works: int
    claims_per_s: float
    statements_per_s: float


@dataclass(frozen=True)
class Model:
    """The fitted coefficients (statements per second per unit of each term)."""

    constant: float
    per_worker: float
    per_look: float
    per_claim: float

    def statements_per_s(self, workers: int, works: int, claims_per_s: float) -> float:
        return (
            self.constant
            + self.per_worker * workers
            + self.per_look * workers * works
            + self.per_claim * claims_per_s
        )

    def as_dict(self) -> dict[str, float]:
        return {term: getattr(self, term) for term in TERMS}


KEPT_UP_P99_MS = 1000.0
"""A loaded case whose lag p99 is above this (or that missed a tick) fell behind its
ticks: the server or the machine, not the fleet's size, set its rate there, so the
fit leaves it out."""


def cases_of(measured: Sequence[dict[str, Any]]) -> tuple[list[Case], list[dict[str, Any]]]:
    """The cases to fit (idle ones, and loaded ones that kept up), and those left out."""
    kept, left = [], []
    for case in measured:
        behind = not case.get("idle") and (
            case["lag_p99_ms"] > KEPT_UP_P99_MS or case["missed"] > 0
        )
        if behind:
            left.append(case)
        else:
            kept.append(
                Case(case["workers"], case["works"], case["claims_per_s"], case["statements_per_s"])
            )
    return kept, left


def _features(case: Case) -> tuple[float, float, float, float]:
    return (1.0, float(case.workers), float(case.workers * case.works), case.claims_per_s)


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting; None when singular."""
    n = len(vector)
    rows = [[*matrix[i], vector[i]] for i in range(n)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(rows[r][col]))
        if abs(rows[pivot][col]) < 1e-12:
            return None
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(n):
            if r != col:
                factor = rows[r][col] / rows[col][col]
                rows[r] = [a - factor * b for a, b in zip(rows[r], rows[col], strict=True)]
    return [rows[i][n] / rows[i][i] for i in range(n)]


def _least_squares(cases: Sequence[Case], used: Sequence[int]) -> list[float] | None:
    """Least squares on the chosen terms only (normal equations)."""
    xs = [[_features(c)[i] for i in used] for c in cases]
    ys = [c.statements_per_s for c in cases]
    normal = [[sum(x[i] * x[j] for x in xs) for j in range(len(used))] for i in range(len(used))]
    right = [sum(x[i] * y for x, y in zip(xs, ys, strict=True)) for i in range(len(used))]
    return _solve(normal, right)


def fit(cases: Sequence[Case]) -> Model:
    """The non-negative least-squares model over ``cases``.

    With four terms, every subset is tried and the one with the smallest
    squared error among those whose coefficients are all >= 0 wins: exact
    non-negative least squares, small enough to need no solver library.
    """
    if not cases:
        raise ValueError("no cases to fit")
    best: tuple[float, list[float]] | None = None
    for size in range(1, len(TERMS) + 1):
        for used in itertools.combinations(range(len(TERMS)), size):
            if len(used) > len(cases):
                continue
            solution = _least_squares(cases, used)
            if solution is None or any(value < 0 for value in solution):
                continue
            full = [0.0] * len(TERMS)
            for index, value in zip(used, solution, strict=True):
                full[index] = value
            error = sum(
                (sum(f * k for f, k in zip(_features(c), full, strict=True)) - c.statements_per_s)
                ** 2
                for c in cases
            )
            if best is None or error < best[0] - 1e-9:
                best = (error, full)
    if best is None:
        return Model(0.0, 0.0, 0.0, 0.0)
    return Model(*best[1])


def per_worker_per_poll(idle: Sequence[Case], poll_s: float) -> float | None:
    """An idle fleet's cost per worker per poll: the slope of statements/s over W.

    Needs two idle cases of different sizes; the slope leaves out what does
    not grow with W (the scheduler's passes).
    """
    sizes = sorted(idle, key=lambda c: c.workers)
    if len(sizes) < 2 or sizes[0].workers == sizes[-1].workers:
        return None
    low, high = sizes[0], sizes[-1]
    slope = (high.statements_per_s - low.statements_per_s) / (high.workers - low.workers)
    return slope * poll_s


def from_measured(measured: Sequence[dict[str, Any]], workers: int, works: int) -> float | None:
    """Statements/s of ``workers`` on ``works`` per-second works, from measured unit costs.

    The fitted model is linear in W, but a fleet's looks are not: with fewer
    workers than due rows each worker looks several times a tick, with more
    each looks once and the surplus finds nothing. What a worker costs is
    measured apart, on the idle fleets (their slope over W: one look a poll),
    with what does not grow with W (the scheduler's passes) as their
    intercept. What a claim adds on top (its finish, and on MySQL the read of
    its rows) comes from the largest loaded fleet with at least as
    many workers as works that kept up. None without both.
    """
    idle = sorted((c for c in measured if c.get("idle")), key=lambda c: c["workers"])
    if len(idle) < 2 or idle[0]["workers"] == idle[-1]["workers"]:
        return None
    low, high = idle[0], idle[-1]
    slope = (high["statements_per_s"] - low["statements_per_s"]) / (
        high["workers"] - low["workers"]
    )
    base = low["statements_per_s"] - slope * low["workers"]
    kept, _ = cases_of([c for c in measured if not c.get("idle")])
    wide = [c for c in kept if c.workers >= c.works and c.claims_per_s > 0]
    if not wide:
        return None
    case = max(wide, key=lambda c: (c.workers, c.works))
    per_claim = (case.statements_per_s - base - slope * case.workers) / case.claims_per_s
    return float(base + slope * workers + max(per_claim, 0.0) * works)
