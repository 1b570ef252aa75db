"""Scaling sweeps: planning, the results table, resuming without re-running finished
points, the data-budget warning, and the `lmscale scaling` verbs' answers."""

import csv
import json
import logging
import re

import ml_collections
import numpy as np
import pytest

import lmscale.scaling.fit as fit
import lmscale.scaling.sweep as sweep
from lmscale.cli import main
from lmscale.errors import ConfigError
from lmscale.scaling.sweep import COLUMNS, plan_sweep, run_sweep
from lmscale.train.defaults import pretrain_config

SIZES = [(16, 1, 2), (32, 1, 2)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """~100 KB of sentences over 200 made-up words: enough for a 320-piece tokenizer."""
    rng = np.random.default_rng(0)
    syllables = ["ka", "ro", "mi", "tu", "le", "sa", "no", "pi", "da", "ve", "go", "shi"]
    words = ["".join(rng.choice(syllables, rng.integers(1, 4))) for _ in range(200)]
    documents = ["\n".join(" ".join(rng.choice(words, 8)) + "." for _ in range(8))
                 for _ in range(300)]
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n\n".join(documents), encoding="utf-8")
    return str(path)


def tiny_sweep(corpus: str, **plan) -> ml_collections.ConfigDict:
    """Two-point sweeps of one-layer models: batch 8 (the 8 fake devices) × 16 tokens."""
    base = pretrain_config("gpt2-tiny", dropout=0.0, vocab_size=320, max_len=16)
    base.data.sources = [corpus]
    base.data.seq_len = 16
    base.train.batch_size = 8
    base.train.log_every = 1
    base.train.eval_every = 0
    base.train.eval_batches = 1
    base.train.checkpoint_every = 0
    base.train.samples = 0
    base.train.peak_flops = 1e11  # skip measuring the peak
    c = ml_collections.ConfigDict()
    c.name = "tiny_sweep"
    c.base = base
    c.sweep = dict(mode="grid", sizes=SIZES, tokens=[256], budgets=[]) | plan
    return c


def write_config(path, corpus: str, **plan) -> str:
    path.write_text(
        "import ml_collections\n\n\ndef get_config():\n"
        f"    return ml_collections.ConfigDict({tiny_sweep(corpus, **plan).to_dict()!r})\n")
    return str(path)


def test_sweep_writes_results_and_a_rerun_skips_finished_points(corpus, tmp_path,
                                                                monkeypatch):
    config = write_config(tmp_path / "scaling_tiny.py", corpus)
    workdir = tmp_path / "sweep"
    args = ["scaling", "sweep", "--config", config, "--workdir", str(workdir)]
    # An interrupted sweep: only the first point ran.
    assert main(args + ["--max-points", "1"]) == 0
    rows = list(csv.DictReader((workdir / "results.csv").open()))
    assert tuple(rows[0]) == COLUMNS
    assert [r["name"] for r in rows] == ["d16-l1-h2_D2.56e2"]
    first = workdir / "d16-l1-h2_D2.56e2" / "summary.json"
    finished_at = first.stat().st_mtime_ns

    trained = []
    real_pretrain = sweep.pretrain

    def counting_pretrain(config, workdir):
        trained.append(config.name)
        return real_pretrain(config, workdir)

    monkeypatch.setattr(sweep, "pretrain", counting_pretrain)
    assert main(args) == 0
    assert trained == ["tiny_sweep/d32-l1-h2_D2.56e2"]  # the finished point was not re-run
    assert first.stat().st_mtime_ns == finished_at
    assert (workdir / "tokenizer" / "spm.model").is_file()
    assert len(list((workdir / "data").iterdir())) == 1  # one prepared dataset for all points

    rows = [json.loads(line) for line in (workdir / "results.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == ["d16-l1-h2_D2.56e2", "d32-l1-h2_D2.56e2"]
    for row in rows:
        assert row["steps"] == 2 and row["D"] == 2 * 8 * 16
        assert row["C"] == 6 * row["N"] * row["D"]
        assert row["N"] < row["N_total"]
        assert row["loss"] == row["eval_loss"] and np.isfinite(row["train_loss"])
        assert row["wall_seconds"] > 0 and row["tokens_per_sec"] > 0
    assert rows[0]["N"] < rows[1]["N"]

    trained.clear()
    assert main(args) == 0
    assert trained == []


def test_isoflop_planner_gives_d_equal_c_over_6n(corpus):
    budgets = [1e9, 4e9]
    points = plan_sweep(tiny_sweep(corpus, mode="isoflop", sizes=SIZES + [(64, 2, 4)],
                                   budgets=budgets))
    assert len(points) == 6
    for point in points:
        budget = float(re.match(r"C([\d.]+e\d+)_", point.name).group(1))
        assert budget in budgets
        assert point.planned_tokens == pytest.approx(budget / (6 * point.N), rel=1e-12)
        # Whole steps: within half a step of the plan.
        assert abs(point.tokens - point.planned_tokens) <= point.tokens_per_step / 2
    assert [p.compute for p in points] == sorted(p.compute for p in points)


def test_isoflop_limits_leave_out_starved_and_oversized_points(corpus):
    config = tiny_sweep(corpus, mode="isoflop", sizes=SIZES + [(64, 2, 4)],
                        budgets=[1e9, 4e9])
    every = plan_sweep(config)
    config.sweep.update(min_steps=20, max_tokens=2e5)
    kept = plan_sweep(config)
    assert kept == [p for p in every if p.steps >= 20 and p.tokens <= 2e5]
    assert 0 < len(kept) < len(every)
    config.sweep.min_steps = 10**9
    with pytest.raises(ConfigError, match="every point of the sweep"):
        run_sweep(config, "unused", max_points=0)


def test_a_budget_beyond_the_data_warns_with_the_epochs(corpus, tmp_path, caplog):
    config = tiny_sweep(corpus, tokens=[1e7])
    with caplog.at_level(logging.INFO, logger="lmscale.scaling.sweep"):
        assert run_sweep(config, tmp_path / "sweep", max_points=0) == []
    available = int(re.search(r"([\d,]+) training tokens available", caplog.text)
                    .group(1).replace(",", ""))
    tokens = round(1e7 / 128) * 128
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(SIZES)
    assert f"{tokens / available:.2f} epochs" in warnings[0]


@pytest.mark.parametrize("plan, match", [
    ({"mode": "chinchilla"}, "sweep.mode"),
    ({"mode": "isoflop"}, "sweep.budgets"),
    ({"sizes": [(16, 1)]}, "(d_model, num_layers, num_heads)"),
])
def test_bad_sweep_plans_are_refused(corpus, plan, match):
    with pytest.raises(ConfigError, match=re.escape(match)):
        plan_sweep(tiny_sweep(corpus, **plan))


def test_an_unknown_sweep_key_names_the_nearest(corpus):
    config = tiny_sweep(corpus)
    config.sweep.token = [1]
    with pytest.raises(ConfigError, match="did you mean 'sweep.tokens'"):
        plan_sweep(config)


def test_fit_with_too_few_points_exits_2(tmp_path, capsys):
    results = tmp_path / "results.csv"
    results.write_text("N,D,loss\n1e6,1e8,3.0\n2e6,1e8,2.9\n1e6,2e8,2.8\n")
    assert main(["scaling", "fit", "--results", str(results), "--grid", "coarse"]) == 2
    err = capsys.readouterr().err
    assert "needs more than 5 runs" in err and "got 3 runs" in err


def test_fit_prints_the_law_and_writes_plots(tmp_path, capsys, monkeypatch):
    # One L-BFGS start near the truth keeps the test fast; the grids are fit.py's concern.
    monkeypatch.setitem(fit.FIT_GRIDS, "coarse", ((0.5,), (0.5,), (0.5,), (5.0,), (5.0,)))
    N, D = (x.ravel() for x in np.meshgrid(np.geomspace(1e5, 1e7, 4), np.geomspace(1e7, 1e9, 4)))
    loss = 1.7 + 400 / N**0.34 + 410 / D**0.28
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps({"N": n, "D": d, "loss": v, "name": "x"}) + "\n"
                               for n, d, v in zip(N, D, loss)))
    out = tmp_path / "plots"
    args = ["scaling", "fit", "--results", str(results), "--out", str(out), "--grid", "coarse",
            "--bootstrap", "5"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["intervals"]) == {"E", "A", "B", "alpha", "beta"}
    assert report["alpha"] == pytest.approx(0.34, abs=0.02)
    assert report["beta"] == pytest.approx(0.28, abs=0.02)
    assert json.loads((out / "fit.json").read_text()) == report
    assert {"loss_vs_N.png", "loss_vs_D.png", "frontier.png", "history.png"} <= {
        p.name for p in out.iterdir()}


def test_table_prints_the_historical_rows(capsys):
    assert main(["scaling", "table"]) == 0
    out = capsys.readouterr().out
    for name in ("GPT-2", "BERT-Large", "Megatron-LM", "GPT-3", "Gopher"):
        assert name in out
    assert "174,604,259,328" in out  # GPT-3 counted from its published shape
