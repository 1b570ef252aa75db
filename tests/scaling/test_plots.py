"""Every scaling plot is written as a real PNG."""

import numpy as np

from lmscale.scaling.fit import fit_all, make_results
from lmscale.scaling.plots import plot_history, write_plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def isoflop_grid():
    N, D = [], []
    for compute in (1e17, 1e18, 1e19):
        sizes = np.geomspace(1e7, 1e9, 7)
        N.extend(sizes)
        D.extend(compute / (6 * sizes))
    N, D = np.array(N), np.array(D)
    return make_results(N, D, 1.69 + 406.4 / N**0.34 + 410.7 / D**0.28)


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000  # axes, points and labels, not an empty canvas


def test_write_plots(tmp_path):
    grid = ((0.5,), (0.5,), (0.5,), (5.0, 10.0), (5.0, 10.0))
    fits = fit_all(isoflop_grid(), bootstrap=0, grid=grid)
    assert fits.isoflop is not None
    paths = write_plots(fits, tmp_path / "plots")
    names = sorted(p.name for p in paths)
    assert names == ["frontier.png", "history.png", "isoflop.png", "loss_vs_D.png", "loss_vs_N.png"]
    for path in paths:
        assert path.parent == tmp_path / "plots"
        assert_png(path)


def test_history_plot_without_a_fit(tmp_path):
    assert_png(plot_history(tmp_path / "history.png"))
