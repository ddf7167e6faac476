"""The fleet benchmark's cost model (``benchmarks/fleet_model.py``), on hand-made figures.

Only the fit: no fleet is run and no timing is asserted.
"""

from __future__ import annotations

import pytest

from benchmarks.fleet_model import Case, Model, fit, per_worker_per_poll

SIZES = [(4, 10, 0.0), (32, 10, 0.0), (4, 10, 10.0), (32, 20, 20.0), (32, 100, 100.0)]


def made(model: Model) -> list[Case]:
    """Cases whose statements are exactly what ``model`` says."""
    return [Case(w, m, c, model.statements_per_s(w, m, c)) for w, m, c in SIZES]


def test_the_fit_finds_the_coefficients_that_made_the_figures() -> None:
    truth = Model(constant=5, per_worker=0.5, per_look=1, per_claim=2)
    fitted = fit(made(truth))
    for term, value in truth.as_dict().items():
        assert fitted.as_dict()[term] == pytest.approx(value, abs=1e-6)
    # the extrapolation: 1,000 workers on 100 per-second works
    assert fitted.statements_per_s(1000, 100, 100) == pytest.approx(100_705)


def test_no_coefficient_is_fitted_below_zero() -> None:
    # one statement per claim and nothing else, with noise pulling the constant negative
    cases = [Case(w, m, c, c * 3 - (1 if n % 2 else 0)) for n, (w, m, c) in enumerate(SIZES)]
    fitted = fit(cases)
    assert all(value >= 0 for value in fitted.as_dict().values())
    assert fitted.per_claim == pytest.approx(3, abs=0.1)


def test_an_idle_fleet_costs_the_slope_per_worker_per_poll() -> None:
    idle = [Case(4, 10, 0, 3 + 4 * 10), Case(32, 10, 0, 3 + 32 * 10)]
    assert per_worker_per_poll(idle, 1.0) == pytest.approx(10)
    assert per_worker_per_poll(idle[:1], 1.0) is None
