"""Scaling-law fits recover known laws from synthetic results; bad input is refused."""

import json

import numpy as np
import pytest
from scipy.optimize import check_grad

from lmscale.errors import InputError
from lmscale.scaling.fit import (
    CHINCHILLA_GRID,
    _huber_objective,
    envelope,
    fit_all,
    fit_isoflop,
    fit_parametric,
    fit_power_law,
    fits_to_json,
    make_results,
    read_results,
)
from lmscale.scaling.plots import write_plots

# Hoffmann et al. 2022 eq. 10: the law their approach 3 found.
TRUTH = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
# Two values per axis of Hoffmann's grid (32 starts) keep the tests fast; the full
# 4,500-start grid is the default for real results.
COARSE_GRID = ((0.5, 1.0), (0.5, 1.0), (0.0, 0.5), (5.0, 10.0), (5.0, 10.0))
TRUTH_A = TRUTH["beta"] / (TRUTH["alpha"] + TRUTH["beta"])  # N_opt ∝ C^0.452


def chinchilla_loss(N, D):
    return TRUTH["E"] + TRUTH["A"] / N ** TRUTH["alpha"] + TRUTH["B"] / D ** TRUTH["beta"]


def grid_results(noise: float, seed: int = 0):
    N, D = np.meshgrid(np.geomspace(1e7, 1e10, 8), np.geomspace(1e9, 1e12, 8))
    N, D = N.ravel(), D.ravel()
    rng = np.random.default_rng(seed)
    return make_results(N, D, chinchilla_loss(N, D) * np.exp(rng.normal(0, noise, N.size)))


@pytest.fixture(scope="module")
def noisy_fit():
    return fit_parametric(grid_results(noise=0.005), grid=COARSE_GRID, bootstrap=60, seed=0)


def test_default_grid_is_hoffmanns():
    assert [len(v) for v in CHINCHILLA_GRID] == [5, 5, 5, 6, 6]  # 4,500 starts
    assert CHINCHILLA_GRID[0] == (0.0, 0.5, 1.0, 1.5, 2.0)
    assert CHINCHILLA_GRID[3] == (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)


def test_objective_gradient_is_exact():
    r = grid_results(noise=0.01)
    args = (np.log(r.N), np.log(r.D), np.log(r.loss), 1e-3)
    for theta in ([0.3, 0.3, 0.5, 6.0, 6.0], [1.0, 0.5, -0.5, 10.0, 3.0]):
        err = check_grad(
            lambda t: _huber_objective(t, *args)[0],
            lambda t: _huber_objective(t, *args)[1],
            np.array(theta),
        )
        assert err < 1e-5


def test_noise_free_results_give_the_law_back():
    one_start = tuple(values[:1] for values in COARSE_GRID)
    fit = fit_parametric(grid_results(noise=0.0), grid=one_start, bootstrap=0)
    for key, value in TRUTH.items():
        assert getattr(fit, key) == pytest.approx(value, rel=1e-3), key


def test_noisy_fit_recovers_parameters(noisy_fit):
    # 0.5% multiplicative noise on 64 runs: exponents to ±0.02, E to ±0.05, A and B to 25%.
    assert noisy_fit.alpha == pytest.approx(TRUTH["alpha"], abs=0.02)
    assert noisy_fit.beta == pytest.approx(TRUTH["beta"], abs=0.02)
    assert noisy_fit.E == pytest.approx(TRUTH["E"], abs=0.05)
    assert noisy_fit.A == pytest.approx(TRUTH["A"], rel=0.25)
    assert noisy_fit.B == pytest.approx(TRUTH["B"], rel=0.25)
    assert noisy_fit.a == pytest.approx(TRUTH_A, abs=0.02)


def test_bootstrap_intervals_cover_truth(noisy_fit):
    assert noisy_fit.confidence == 0.95
    for key, value in TRUTH.items():
        lo, hi = noisy_fit.intervals[key]
        assert lo <= getattr(noisy_fit, key) <= hi, key
        assert lo <= value <= hi, key
        assert hi > lo


def test_bootstrap_is_seeded():
    r = grid_results(noise=0.005)
    start = tuple(values[:1] for values in COARSE_GRID)
    first, again, other = (
        fit_parametric(r, grid=start, bootstrap=10, seed=seed) for seed in (3, 3, 4)
    )
    assert first.intervals == again.intervals
    assert first.intervals != other.intervals


def test_closed_form_frontier_minimises_loss_at_fixed_compute(noisy_fit):
    for compute in (1e19, 1e22, 1e24):
        n_opt, d_opt = noisy_fit.compute_optimal(compute)
        assert 6 * n_opt * d_opt == pytest.approx(compute)
        best = noisy_fit.predict(n_opt, d_opt)
        for factor in (0.8, 1.25):
            n = n_opt * factor
            assert noisy_fit.predict(n, compute / (6 * n)) > best
        assert noisy_fit.tokens_per_parameter(compute) == pytest.approx(d_opt / n_opt)


def test_power_laws():
    x = np.geomspace(1e6, 1e10, 9)
    pure = fit_power_law(x, (8.8e13 / x) ** 0.076)  # Kaplan eq. 1.1
    assert pure.E == 0.0
    assert pure.alpha == pytest.approx(0.076, rel=1e-9)
    assert pure.A == pytest.approx(8.8e13**0.076, rel=1e-9)
    shifted = fit_power_law(x, 1.7 + 300 / x**0.3, irreducible=True)
    assert (shifted.E, shifted.A, shifted.alpha) == pytest.approx((1.7, 300, 0.3), rel=1e-3)


def test_envelope_takes_the_best_run_per_size():
    values, best = envelope(np.array([1.0, 1.0, 2.0]), np.array([3.0, 2.5, 2.0]))
    assert values.tolist() == [1.0, 2.0] and best.tolist() == [2.5, 2.0]


def isoflop_results(noise: float = 0.0, first_size: int = -4):
    """Nine sizes per budget, spaced ×√2 from √2^first_size times the true optimum (the
    default centres them on it), D = C / 6N."""
    alpha, beta, A, B = TRUTH["alpha"], TRUTH["beta"], TRUTH["A"], TRUTH["B"]
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))  # Hoffmann et al. eq. 4
    rng = np.random.default_rng(1)
    N, D = [], []
    for compute in np.geomspace(1e18, 1e22, 5):
        n_opt = G * (compute / 6) ** TRUTH_A
        sizes = n_opt * np.sqrt(2.0) ** np.arange(first_size, first_size + 9)
        N.extend(sizes)
        D.extend(compute / (6 * sizes))
    N, D = np.array(N), np.array(D)
    return make_results(N, D, chinchilla_loss(N, D) * np.exp(rng.normal(0, noise, N.size)))


def test_isoflop_recovers_the_exponents():
    iso = fit_isoflop(isoflop_results(noise=0.002))
    assert iso.budgets.size == 5
    assert iso.a == pytest.approx(TRUTH_A, abs=0.03)
    assert iso.a + iso.b == pytest.approx(1.0)
    assert iso.D_opt == pytest.approx(iso.budgets / (6 * iso.N_opt))


def test_isoflop_refuses_minima_outside_the_sizes_trained():
    # Every size above the optimum: the loss only rises with N, and a parabola's vertex
    # would be an extrapolation below the smallest model.
    with pytest.raises(InputError, match="minimum lies among the sizes"):
        fit_isoflop(isoflop_results(first_size=3))


def test_no_frontier_is_reported_when_loss_does_not_fall_with_n(tmp_path):
    """Step-starved small-scale runs can make loss rise with N at fixed D (alpha < 0):
    the report says so instead of a complex-valued G, and the plots skip the frontier."""
    N, D = (x.ravel() for x in np.meshgrid(np.geomspace(1e4, 1e6, 5), np.geomspace(1e5, 1e7, 5)))
    loss = 2.0 + 0.2 * N ** 0.05 + 400 / D ** 0.3
    fits = fit_all(make_results(N, D, loss), bootstrap=0, grid=COARSE_GRID)
    assert fits.parametric.alpha < 0 and not fits.parametric.has_frontier
    report = json.loads(json.dumps(fits_to_json(fits)))
    assert report["compute_optimal"] is None
    assert "no compute-optimal frontier" in report["skipped"]["compute_optimal"]
    names = {p.name for p in write_plots(fits, tmp_path)}
    assert "frontier.png" not in names and "history.png" in names


def test_report_json(tmp_path):
    fits = fit_all(isoflop_results(0.002), bootstrap=20, grid=COARSE_GRID)
    report = json.loads(json.dumps(fits_to_json(fits)))
    for key in ("E", "A", "B", "alpha", "beta"):
        assert isinstance(report[key], float)
        assert len(report["intervals"][key]) == 2
    assert report["points"] == 45
    assert report["isoflop"]["a"] == pytest.approx(fits.isoflop.a)
    assert set(report["compute_optimal"]) == {"G", "a", "b"}


# --- reading results and refusing bad input ------------------------------------------


def test_reads_csv_and_jsonl_ignoring_other_columns(tmp_path):
    csv_path = tmp_path / "results.csv"
    csv_path.write_text("N,D,C,loss,wall_s\n1e6,2e7,1.2e14,3.5,10\n2e6,2e7,2.4e14,3.2,20\n")
    jsonl_path = tmp_path / "results.jsonl"
    jsonl_path.write_text(
        '{"N": 1e6, "D": 2e7, "loss": 3.5, "tokens/s": 5}\n\n{"N": 2e6, "D": 2e7, "loss": 3.2}\n'
    )
    for path in (csv_path, jsonl_path):
        r = read_results(path)
        assert r.N.tolist() == [1e6, 2e6] and r.loss.tolist() == [3.5, 3.2]
        assert r.compute.tolist() == [1.2e14, 2.4e14]


def test_loss_column_can_be_chosen(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("N,D,eval_loss\n1,2,3\n")
    assert read_results(path, loss_column="eval_loss").loss.tolist() == [3.0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("N,loss\n1,2\n", "lacks column.*D"),
        ("N,D,loss\n1e6,1e7,0\n", "loss must be finite and positive; row 1"),
        ("N,D,loss\n1e6,1e7,2\n-5,1e7,2\n", "N must be finite and positive; row 2"),
        ("N,D,loss\n1e6,nan,2\n", "D must be finite"),
        ("N,D,loss\n1e6,1e7,abc\n", "numeric"),
        ("N,D,loss\n", "no results"),
    ],
)
def test_bad_tables_are_input_errors(tmp_path, text, message):
    path = tmp_path / "r.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_results(path)


def test_unreadable_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read_results(tmp_path / "missing.csv")
    bad = tmp_path / "r.jsonl"
    bad.write_text('{"N": 1, "D": 2, "loss": 3}\nnot json\n')
    with pytest.raises(InputError, match=":2: not a JSON object"):
        read_results(bad)


def test_too_few_points_are_input_errors():
    few = make_results([1e6, 2e6, 4e6, 8e6, 1.6e7], [1e9] * 5, [3.0, 2.9, 2.8, 2.7, 2.6])
    with pytest.raises(InputError, match="more than 5 runs"):
        fit_parametric(few, bootstrap=0)
    with pytest.raises(InputError, match="2 token counts"):
        fit_parametric(make_results(np.geomspace(1e6, 1e8, 8), [1e9] * 8, np.linspace(3, 2, 8)))
    with pytest.raises(InputError, match="at least 4 distinct"):
        fit_power_law([1.0, 2.0, 3.0], [3.0, 2.0, 1.5], irreducible=True)
    with pytest.raises(InputError, match="at least 2 compute budgets"):
        fit_isoflop(few)


def test_fit_all_reports_what_it_skipped():
    # One token count: the parametric fit is impossible, so fit_all raises.
    with pytest.raises(InputError):
        fit_all(make_results(np.geomspace(1e6, 1e8, 8), [1e9] * 8, np.linspace(3, 2, 8)))
    # Two model sizes: enough for the parametric law and L(D), too few for L(N) or IsoFLOP.
    N, D = (x.ravel() for x in np.meshgrid([1e8, 1e9], np.geomspace(1e9, 1e12, 8)))
    fits = fit_all(make_results(N, D, chinchilla_loss(N, D)), bootstrap=0, grid=COARSE_GRID)
    assert set(fits.skipped) == {"loss_vs_N", "isoflop"}
    assert fits.loss_vs_D is not None
    report = fits_to_json(fits)
    assert report["isoflop"] is None and "isoflop" in report["skipped"]
