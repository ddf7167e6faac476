"""The fleet benchmark's cost model (``benchmarks/fleet_model.py``), on hand-made figures.

Only the fit: no fleet is run and no timing is asserted.
"""

from __future__ import annotations

import pytest

from benchmarks.fleet_model import Case, Model, fit, from_measured, per_worker_per_poll

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


def test_the_extrapolation_from_measured_costs_adds_a_look_per_worker_and_a_claims_cost() -> None:
    """Idle: 10 + 1 per worker; loaded with W >= M: claims cost 2 each beyond the looks."""

    def case(
        works: int, workers: int, claims: float, statements: float, idle: bool
    ) -> dict[str, object]:
        return {
            "works": works, "workers": workers, "claims_per_s": claims,
            "statements_per_s": statements, "idle": idle, "lag_p99_ms": 100.0, "missed": 0,
        }  # fmt: skip

    measured = [
        case(10, 4, 0.0, 14.0, True),
        case(10, 32, 0.0, 42.0, True),
        case(100, 32, 100.0, 400.0, False),  # fewer workers than works: not the one used
        case(100, 128, 100.0, 10.0 + 128.0 + 200.0, False),
    ]
    assert from_measured(measured, 1000, 100) == pytest.approx(10.0 + 1000.0 + 200.0)
    assert from_measured(measured[2:], 1000, 100) is None  # no idle fleets: no worker's cost
