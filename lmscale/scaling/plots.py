"""PNG plots of scaling fits: loss against N and D, IsoFLOP profiles, the frontier, history.

Figures are built with `matplotlib.figure.Figure` (Agg canvas) rather than pyplot, so
no global backend or figure state is touched and nothing needs a display.
"""

from __future__ import annotations

import io

from etils.epath import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from lmscale import storage
from lmscale.scaling.fit import ScalingFits, envelope, group_budgets
from lmscale.scaling.history import HISTORY, HistoricalModel


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    storage.write_bytes(path, png.getvalue())
    return path


def _span(values: np.ndarray, pad: float = 1.5) -> np.ndarray:
    return np.geomspace(values.min() / pad, values.max() * pad, 100)


def plot_loss_vs(fits: ScalingFits, variable: str, path: Path) -> Path:
    """Loss against N or D: runs coloured by the other variable, the parametric law at
    each of its values, and the single-variable power law through the lower envelope."""
    r, p = fits.results, fits.parametric
    x, other = (r.N, r.D) if variable == "N" else (r.D, r.N)
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    levels = np.unique(other)
    palette = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, levels.size))
    grid = _span(x)
    for level, colour in zip(levels, palette):
        mask = other == level
        ax.scatter(x[mask], r.loss[mask], color=colour, s=14)
        if levels.size <= 12:  # one curve per level stays readable only for a few levels
            curve = p.predict(grid, level) if variable == "N" else p.predict(level, grid)
            ax.plot(grid, curve, color=colour, lw=1, alpha=0.8)
    law = fits.loss_vs_N if variable == "N" else fits.loss_vs_D
    if law is not None:
        ex, el = envelope(x, r.loss)
        ax.plot(
            grid,
            law.predict(grid),
            "k--",
            lw=1.2,
            label=f"envelope: {law.E:.3g} + {law.A:.3g}/{variable}^{law.alpha:.3f}",
        )
        ax.scatter(ex, el, facecolors="none", edgecolors="k", s=40)
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters N" if variable == "N" else "training tokens D")
    ax.set_ylabel("loss")
    ax.set_title(
        f"loss vs {variable} (lines: L = E + A/N^α + B/D^β, α={p.alpha:.3f}, β={p.beta:.3f})",
        fontsize=9,
    )
    return _save(fig, path)


def plot_isoflop(fits: ScalingFits, path: Path) -> Path:
    """Loss against N at each compute budget, with the approach-2 parabolas and minima."""
    r = fits.results
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    labels = group_budgets(r.compute)
    for label in np.unique(labels):
        mask = labels == label
        budget = np.exp(np.log(r.compute[mask]).mean())
        line = ax.plot(r.N[mask], r.loss[mask], "o", ms=4, label=f"C={budget:.2g}")[0]
        if fits.isoflop is not None:
            match = np.flatnonzero(np.isclose(fits.isoflop.budgets, budget))
            if match.size:
                coeffs = fits.isoflop.parabolas[match[0]]
                grid = _span(r.N[mask], 1.2)
                ax.plot(grid, np.polyval(coeffs, np.log(grid)), color=line.get_color(), lw=1)
                n_opt = fits.isoflop.N_opt[match[0]]
                ax.plot(
                    n_opt, np.polyval(coeffs, np.log(n_opt)), "*", color=line.get_color(), ms=10
                )
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("loss")
    ax.set_title("IsoFLOP profiles (stars: parabola minima)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_frontier(fits: ScalingFits, path: Path) -> Path:
    """N_opt(C) and D_opt(C): the parametric closed form and, if fitted, IsoFLOP minima."""
    p = fits.parametric
    compute = _span(fits.results.compute, 10)
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    if p.has_frontier:
        n_opt, d_opt = p.compute_optimal(compute)
        ax.plot(compute, n_opt, "C0", label=f"N_opt ∝ C^{p.a:.3f} (parametric)")
        ax.plot(compute, d_opt, "C1", label=f"D_opt ∝ C^{p.b:.3f} (parametric)")
    iso = fits.isoflop
    if iso is not None:
        ax.plot(iso.budgets, iso.N_opt, "o", color="C0", label=f"IsoFLOP N_opt, a={iso.a:.3f}")
        ax.plot(iso.budgets, iso.D_opt, "s", color="C1", label=f"IsoFLOP D_opt, b={iso.b:.3f}")
        ax.plot(compute, iso.compute_optimal(compute)[0], "C0:", lw=1)
        ax.plot(compute, iso.compute_optimal(compute)[1], "C1:", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C = 6ND (FLOPs)")
    ax.set_ylabel("parameters / tokens")
    ax.set_title("compute-optimal frontier", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_history(
    path: Path, fits: ScalingFits | None = None, models: tuple[HistoricalModel, ...] = HISTORY
) -> Path:
    """Historical models on N–D axes beside the compute-optimal line and our own runs.

    Without a fit, the line is Hoffmann et al.'s ≈20 tokens per parameter.
    """
    known = [m for m in models if m.tokens is not None]
    n = np.array([m.count.non_embedding for m in known], dtype=float)
    d = np.array([m.tokens for m in known], dtype=float)
    fig = Figure(figsize=(6.5, 5))
    ax = fig.add_subplot()
    ax.scatter(n, d, color="C3", zorder=3)
    for m, xi, yi in zip(known, n, d):
        ax.annotate(m.name, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    lows = [n.min()] + ([fits.results.N.min()] if fits is not None else [])
    highs = [n.max()] + ([fits.results.N.max()] if fits is not None else [])
    line_n = np.geomspace(min(lows) / 3, max(highs) * 3, 100)
    if fits is None:
        ax.plot(line_n, 20 * line_n, "k--", lw=1, label="D = 20 N (Hoffmann et al. 2022)")
    else:
        p = fits.parametric
        if p.has_frontier:
            # Invert N_opt = G (C/6)^a for C/6, then D_opt = (C/6)^b / G.
            c6 = (line_n / p.G) ** (1 / p.a)
            ax.plot(line_n, c6**p.b / p.G, "k--", lw=1, label="compute-optimal D(N), our fit")
        ax.scatter(fits.results.N, fits.results.D, s=8, color="C0", label="our runs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("training tokens D")
    ax.set_title("language models on N–D axes", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_plots(fits: ScalingFits, out_dir: str | Path) -> list[Path]:
    """Every plot for `lmscale scaling fit`, as PNGs in `out_dir` (created if needed)."""
    out = storage.as_path(out_dir)
    paths = [
        plot_loss_vs(fits, "N", out / "loss_vs_N.png"),
        plot_loss_vs(fits, "D", out / "loss_vs_D.png"),
        plot_history(out / "history.png", fits),
    ]
    if fits.parametric.has_frontier or fits.isoflop is not None:
        paths.append(plot_frontier(fits, out / "frontier.png"))
    # The profiles are worth seeing even where no parabola could be fitted.
    labels = group_budgets(fits.results.compute)
    if max(np.bincount(labels)) >= 3:
        paths.append(plot_isoflop(fits, out / "isoflop.png"))
    return paths
