"""Scaling-law fits to a results table of (N parameters, D tokens, loss).

- The parametric law L(N, D) = E + A/N^α + B/D^β, fitted as Hoffmann et al. 2022
  (appendix D.2) did, with bootstrap intervals.
- Kaplan et al. 2020 single-variable power laws L(N) and L(D).
- Hoffmann et al.'s approach 2: a parabola in log N per IsoFLOP budget, then power laws
  for N_opt(C) and D_opt(C).
- The compute-optimal frontier implied by the parametric law (Hoffmann et al. D.3).
"""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import least_squares, minimize

from lmscale import storage
from lmscale.errors import InputError

HUBER_DELTA = 1e-3  # Hoffmann et al. D.2
# Hoffmann et al. D.2's initialisation grid over (α, β, e, a, b), E = exp(e) etc.
CHINCHILLA_GRID: tuple[tuple[float, ...], ...] = (
    (0.0, 0.5, 1.0, 1.5, 2.0),
    (0.0, 0.5, 1.0, 1.5, 2.0),
    (-1.0, -0.5, 0.0, 0.5, 1.0),
    (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
)
# Every other value of each axis of that grid: 243 starts, ~20x faster, for a quick fit
# on a small machine (`lmscale scaling fit --grid coarse`).
COARSE_GRID: tuple[tuple[float, ...], ...] = tuple(axis[::2] for axis in CHINCHILLA_GRID)
FIT_GRIDS = {"full": CHINCHILLA_GRID, "coarse": COARSE_GRID}
PARAMETRIC_KEYS = ("E", "A", "B", "alpha", "beta")


@dataclass(frozen=True)
class Results:
    """Arrays of equal length, one entry per finished run."""

    N: np.ndarray  # parameters (non-embedding, Kaplan's convention)
    D: np.ndarray  # training tokens
    loss: np.ndarray

    @property
    def compute(self) -> np.ndarray:
        return 6.0 * self.N * self.D  # Kaplan et al. 2.1: C ≈ 6ND


def make_results(N: Any, D: Any, loss: Any) -> Results:
    """Validated Results from array-likes: finite, positive, equal lengths."""
    arrays = [np.asarray(x, dtype=float).ravel() for x in (N, D, loss)]
    if len({a.size for a in arrays}) != 1:
        raise InputError(f"N, D and loss differ in length: {[a.size for a in arrays]}")
    for name, a in zip(("N", "D", "loss"), arrays):
        bad = np.flatnonzero(~np.isfinite(a) | (a <= 0))
        if bad.size:
            raise InputError(
                f"{name} must be finite and positive; row {bad[0] + 1} has {name}={a[bad[0]]!r}"
                f" ({bad.size} bad row(s)); remove or fix them"
            )
    return Results(*arrays)


def read_results(path: str | Path, loss_column: str = "loss") -> Results:
    """Read a CSV or JSON Lines results table with at least columns N, D and `loss_column`.

    Other columns are ignored. JSON Lines is recognised by a `.jsonl`/`.json` suffix or
    a first character `{`.
    """
    text = storage.read_text(path)
    path = Path(path)
    if path.suffix in (".jsonl", ".json") or text.lstrip().startswith("{"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{number}: not a JSON object ({e.msg})") from e
    else:
        rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise InputError(f"{path} holds no results")
    columns = ("N", "D", loss_column)
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise InputError(
            f"{path} lacks column(s) {', '.join(missing)}; found {', '.join(rows[0])}. "
            "A results table needs N (parameters), D (training tokens) and the loss."
        )
    try:
        values = [[float(row[c]) for row in rows] for c in columns]
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: every row needs numeric {', '.join(columns)} ({e})") from e
    return make_results(*values)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)


# --- Parametric law (Hoffmann et al. 2022, approach 3) -------------------------------


@dataclass(frozen=True)
class ParametricFit:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float  # mean Huber loss / δ at the optimum
    intervals: dict[str, tuple[float, float]]  # bootstrap percentile intervals
    confidence: float

    def predict(self, N: Any, D: Any) -> np.ndarray:
        N, D = np.asarray(N, float), np.asarray(D, float)
        return self.E + self.A / N**self.alpha + self.B / D**self.beta

    @property
    def has_frontier(self) -> bool:
        """Whether loss falls with both N and D, so that a compute-optimal split exists
        (the closed form below needs α, β > 0)."""
        return self.alpha > 0 and self.beta > 0

    @property
    def G(self) -> float:
        """Hoffmann et al. D.3: N_opt = G (C/6)^a, D_opt = G⁻¹ (C/6)^b."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    @property
    def a(self) -> float:
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def compute_optimal(self, C: Any) -> tuple[np.ndarray, np.ndarray]:
        """(N_opt, D_opt) minimising L(N, D) under C = 6ND."""
        c6 = np.asarray(C, float) / 6.0
        return self.G * c6**self.a, c6**self.b / self.G

    def tokens_per_parameter(self, C: Any) -> np.ndarray:
        N_opt, D_opt = self.compute_optimal(C)
        return D_opt / N_opt


def _huber_objective(
    theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray, delta: float
) -> tuple[float, np.ndarray]:
    """Huber loss of LSE(a − α log N, b − β log D, e) − log L, and its gradient.

    Divided by δ·n, which leaves the minimiser unchanged but makes the gradient O(1),
    so L-BFGS's default tolerances mean something (the raw sum is ~1e-4).
    """
    alpha, beta, e, a, b = theta
    t0, t1 = a - alpha * log_n, b - beta * log_d
    top = np.maximum(np.maximum(t0, t1), e)
    w0, w1, w2 = np.exp(t0 - top), np.exp(t1 - top), np.exp(e - top)
    total = w0 + w1 + w2
    residual = top + np.log(total) - log_loss
    size = np.abs(residual)
    scale = 1.0 / (delta * log_n.size)
    value = np.where(size <= delta, 0.5 * residual**2, delta * (size - 0.5 * delta)).sum()
    dr = np.clip(residual, -delta, delta) / total  # Huber derivative × softmax normaliser
    g0, g1, g2 = dr * w0, dr * w1, dr * w2  # ∂LSE/∂t_k is the softmax weight w_k/total
    grad = np.array([-(g0 @ log_n), -(g1 @ log_d), g2.sum(), g0.sum(), g1.sum()])
    return float(value) * scale, grad * scale


def _minimise(starts: np.ndarray, args: tuple) -> np.ndarray:
    best, best_value = starts[0], np.inf
    for start in starts:
        result = minimize(_huber_objective, start, args=args, jac=True, method="L-BFGS-B")
        if result.fun < best_value:
            best, best_value = result.x, result.fun
    return best


def fit_parametric(
    results: Results,
    *,
    delta: float = HUBER_DELTA,
    grid: tuple[tuple[float, ...], ...] = CHINCHILLA_GRID,
    bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> ParametricFit:
    """Fit L(N, D) = E + A/N^α + B/D^β as Hoffmann et al. 2022 appendix D.2.

    Minimises the Huber loss (δ = 1e-3) of log-space residuals, with A, B, E written as
    exp(a), exp(b), exp(e) so L = exp(LSE(a − α log N, b − β log D, e)); L-BFGS from every
    point of their initialisation grid, keeping the best. Intervals: percentile bootstrap
    over runs, each resample refitted with L-BFGS from the full-data optimum (a full grid
    per resample would multiply the cost by the grid's size). The full grid is 4,500
    L-BFGS runs, a few milliseconds each: tens of seconds on a small CPU.
    """
    n_distinct, d_distinct = np.unique(results.N).size, np.unique(results.D).size
    _require(
        results.loss.size > len(PARAMETRIC_KEYS) and n_distinct >= 2 and d_distinct >= 2,
        f"the parametric fit needs more than {len(PARAMETRIC_KEYS)} runs covering at least "
        f"2 model sizes and 2 token counts; got {results.loss.size} runs, {n_distinct} sizes, "
        f"{d_distinct} token counts",
    )
    args = (np.log(results.N), np.log(results.D), np.log(results.loss), delta)
    starts = np.array(list(itertools.product(*grid)), dtype=float)
    theta = _minimise(starts, args)
    objective = _huber_objective(theta, *args)[0]

    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(bootstrap):
        idx = rng.integers(0, results.loss.size, results.loss.size)
        resampled = tuple(x[idx] for x in args[:3]) + (delta,)
        samples.append(_natural(_minimise(theta[None], resampled)))
    tail = 100 * (1 - confidence) / 2
    intervals = {}
    if samples:
        table = np.array(samples)
        for k, key in enumerate(PARAMETRIC_KEYS):
            lo, hi = np.percentile(table[:, k], [tail, 100 - tail])
            intervals[key] = (float(lo), float(hi))
    return ParametricFit(
        *_natural(theta), objective=objective, intervals=intervals, confidence=confidence
    )


def _natural(theta: np.ndarray) -> tuple[float, float, float, float, float]:
    """(α, β, e, a, b) → (E, A, B, α, β)."""
    alpha, beta, e, a, b = (float(x) for x in theta)
    return float(np.exp(e)), float(np.exp(a)), float(np.exp(b)), alpha, beta


# --- Single-variable power laws (Kaplan et al. 2020) ---------------------------------


@dataclass(frozen=True)
class PowerLawFit:
    """L(x) = E + A / x^α; E = 0 is Kaplan's pure power law (x_c/x)^α with A = x_c^α."""

    E: float
    A: float
    alpha: float

    def predict(self, x: Any) -> np.ndarray:
        return self.E + self.A / np.asarray(x, float) ** self.alpha


def fit_power_law(x: Any, loss: Any, *, irreducible: bool = False) -> PowerLawFit:
    """Least squares in log space: log L against log(E + A x^-α).

    Without the irreducible term this is a straight line in log–log (Kaplan et al.
    eq. 1.1–1.2); with it, a short search over E ∈ [0, min L) seeds a least-squares fit.
    """
    x, loss = np.asarray(x, float), np.asarray(loss, float)
    needed = 4 if irreducible else 2
    _require(
        np.unique(x).size >= needed,
        f"a power law{' with an irreducible term' if irreducible else ''} needs at least "
        f"{needed} distinct x values; got {np.unique(x).size}",
    )
    log_x, log_loss = np.log(x), np.log(loss)
    slope, intercept = np.polyfit(log_x, log_loss, 1)
    if not irreducible:
        return PowerLawFit(E=0.0, A=float(np.exp(intercept)), alpha=float(-slope))

    def residual(p: np.ndarray) -> np.ndarray:
        log_e, log_a, alpha = p
        return np.logaddexp(log_e, log_a - alpha * log_x) - log_loss

    best = None
    for fraction in (0.1, 0.3, 0.5, 0.7, 0.9):
        e0 = fraction * loss.min()
        s, c = np.polyfit(log_x, np.log(loss - e0), 1)
        result = least_squares(residual, [np.log(e0), c, -s])
        if best is None or result.cost < best.cost:
            best = result
    log_e, log_a, alpha = best.x
    return PowerLawFit(E=float(np.exp(log_e)), A=float(np.exp(log_a)), alpha=float(alpha))


def envelope(x: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lowest loss at each distinct x: L(N) is the loss not limited by data (Kaplan 3.1)."""
    values = np.unique(x)
    return values, np.array([loss[x == v].min() for v in values])


# --- IsoFLOP profiles (Hoffmann et al. 2022, approach 2) -----------------------------


@dataclass(frozen=True)
class IsoFlopFit:
    budgets: np.ndarray  # C of each usable budget
    N_opt: np.ndarray  # the parabola's minimum per budget
    parabolas: np.ndarray  # [budget, 3] coefficients of loss against log N (highest first)
    a: float  # N_opt ∝ C^a
    b: float  # D_opt ∝ C^b
    N_coefficient: float
    D_coefficient: float

    @property
    def D_opt(self) -> np.ndarray:
        return self.budgets / (6.0 * self.N_opt)

    def compute_optimal(self, C: Any) -> tuple[np.ndarray, np.ndarray]:
        C = np.asarray(C, float)
        return self.N_coefficient * C**self.a, self.D_coefficient * C**self.b


def group_budgets(compute: np.ndarray, tolerance: float = 0.1) -> np.ndarray:
    """Label runs whose C = 6ND agree within `tolerance` (relative) as one budget."""
    order = np.argsort(compute)
    labels = np.empty(compute.size, dtype=int)
    label, start = 0, compute[order[0]]
    for i in order:
        if compute[i] > start * (1 + tolerance):
            label, start = label + 1, compute[i]
        labels[i] = label
    return labels


def fit_isoflop(results: Results, *, tolerance: float = 0.1) -> IsoFlopFit:
    """Approach 2: per budget, loss = p(log N) quadratic; N_opt at its vertex.

    Budgets with fewer than 3 sizes, a parabola that is not convex (no minimum) or a
    vertex outside the sizes trained (an extrapolation, not a measured minimum) are
    skipped; at least 2 usable budgets are needed for the power laws.
    """
    labels = group_budgets(results.compute, tolerance)
    budgets, n_opt, parabolas = [], [], []
    for label in np.unique(labels):
        mask = labels == label
        log_n = np.log(results.N[mask])
        if np.unique(log_n).size < 3:
            continue
        p = np.polyfit(log_n, results.loss[mask], 2)
        if p[0] <= 0:
            continue
        vertex = -p[1] / (2 * p[0])
        if not log_n.min() <= vertex <= log_n.max():
            continue
        budgets.append(np.exp(np.log(results.compute[mask]).mean()))
        n_opt.append(np.exp(vertex))
        parabolas.append(p)
    _require(
        len(budgets) >= 2,
        f"the IsoFLOP fit needs at least 2 compute budgets (C = 6ND within "
        f"{tolerance:.0%}) with 3 or more model sizes and a convex loss profile whose "
        f"minimum lies among the sizes; found {len(budgets)} of {np.unique(labels).size} "
        "budgets",
    )
    budgets_arr, n_opt_arr = np.array(budgets), np.array(n_opt)
    a, log_kn = np.polyfit(np.log(budgets_arr), np.log(n_opt_arr), 1)
    b, log_kd = np.polyfit(np.log(budgets_arr), np.log(budgets_arr / (6 * n_opt_arr)), 1)
    return IsoFlopFit(
        budgets=budgets_arr,
        N_opt=n_opt_arr,
        parabolas=np.array(parabolas),
        a=float(a),
        b=float(b),
        N_coefficient=float(np.exp(log_kn)),
        D_coefficient=float(np.exp(log_kd)),
    )


# --- The report `lmscale scaling fit` prints -----------------------------------------


@dataclass(frozen=True)
class ScalingFits:
    results: Results
    parametric: ParametricFit
    loss_vs_N: PowerLawFit | None
    loss_vs_D: PowerLawFit | None
    isoflop: IsoFlopFit | None
    skipped: dict[str, str]  # fit name → why it could not be made from these results


def fit_all(
    results: Results,
    *,
    bootstrap: int = 200,
    seed: int = 0,
    grid: tuple[tuple[float, ...], ...] = CHINCHILLA_GRID,
) -> ScalingFits:
    """Every fit the results support; the parametric one is required, the others optional."""
    parametric = fit_parametric(results, bootstrap=bootstrap, seed=seed, grid=grid)
    skipped: dict[str, str] = {}
    optional: dict[str, Any] = {}
    for name, fit in (
        ("loss_vs_N", lambda: fit_power_law(*envelope(results.N, results.loss), irreducible=True)),
        ("loss_vs_D", lambda: fit_power_law(*envelope(results.D, results.loss), irreducible=True)),
        ("isoflop", lambda: fit_isoflop(results)),
    ):
        try:
            optional[name] = fit()
        except InputError as e:
            optional[name], skipped[name] = None, str(e)
    return ScalingFits(results=results, parametric=parametric, skipped=skipped, **optional)


def fits_to_json(fits: ScalingFits) -> dict[str, Any]:
    """The JSON object: E, A, B, alpha, beta, their intervals, and the derived laws."""
    p = fits.parametric
    report: dict[str, Any] = {key: getattr(p, key) for key in PARAMETRIC_KEYS}
    report["intervals"] = {key: list(v) for key, v in p.intervals.items()}
    report["confidence"] = p.confidence
    report["points"] = int(fits.results.loss.size)
    skipped = dict(fits.skipped)
    if p.has_frontier:
        report["compute_optimal"] = {"G": p.G, "a": p.a, "b": p.b}
    else:
        report["compute_optimal"] = None
        skipped["compute_optimal"] = (
            f"alpha={p.alpha:.3g}, beta={p.beta:.3g}: the fitted loss does not fall with both "
            "N and D, so L(N, D) has no compute-optimal frontier")
    for name in ("loss_vs_N", "loss_vs_D"):
        law = getattr(fits, name)
        report[name] = None if law is None else {"E": law.E, "A": law.A, "alpha": law.alpha}
    iso = fits.isoflop
    report["isoflop"] = (
        None
        if iso is None
        else {
            "a": iso.a,
            "b": iso.b,
            "budgets": iso.budgets.tolist(),
            "N_opt": iso.N_opt.tolist(),
        }
    )
    if skipped:
        report["skipped"] = skipped
    return report
