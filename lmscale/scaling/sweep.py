"""Scaling sweeps: a grid of model sizes × token budgets, or IsoFLOP profiles.

Each point is an ordinary pretraining run (`lmscale.train.pretrain.pretrain`) in its own
directory `<sweep_dir>/<point name>/`. All points share one tokenizer and one prepared
dataset, both made once in the sweep directory before the first point. A point whose
summary says it reached its planned step is skipped on a rerun; an interrupted one
resumes from its checkpoint, so a killed sweep loses at most the steps since the last
checkpoint. The results table (`results.csv`, `results.jsonl`) is rewritten after every
point, cheapest first, so a partial sweep already has a usable table.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import statistics
import time
from dataclasses import dataclass

import ml_collections
from etils.epath import Path

from lmscale import storage
from lmscale.config import check_keys, to_json
from lmscale.data.pretrain import prepare_pretraining_data, tokenizer_path
from lmscale.errors import ConfigError
from lmscale.models import ModelConfig
from lmscale.flops import param_count
from lmscale.train.defaults import pretrain_config
from lmscale.train.metrics import read_metrics
from lmscale.train.pretrain import pretrain
from lmscale.train.throughput import transformer_shape

log = logging.getLogger(__name__)

MODES = ("grid", "isoflop")
COLUMNS = ("name", "N", "N_total", "D", "C", "steps", "train_loss", "eval_loss", "loss",
           "wall_seconds", "tokens_per_sec", "epochs", "notes")


def sweep_template(model_preset: str) -> ml_collections.ConfigDict:
    """Every valid key of a sweep config: a pretraining config `base` and the `sweep` plan."""
    c = ml_collections.ConfigDict()
    c.name = ""
    c.base = pretrain_config(model_preset)
    c.sweep = ml_collections.ConfigDict()
    c.sweep.mode = "grid"  # "grid": sizes × tokens; "isoflop": sizes × budgets, D = C / 6N
    c.sweep.sizes = []  # (d_model, num_layers, num_heads); d_ff = 4·d_model as in GPT-2
    c.sweep.tokens = []  # grid: training tokens D of each point
    c.sweep.budgets = []  # isoflop: compute C = 6ND of each profile
    # Points outside these limits are left out (IsoFLOP profiles cross every size with
    # every budget; a big model on a small budget gets too few steps, a small one on a big
    # budget more tokens than the corpus holds). 0 = no limit.
    c.sweep.min_steps = 0
    c.sweep.max_tokens = 0.0
    return c


@dataclass(frozen=True)
class SweepPoint:
    name: str
    model: dict  # model fields this point overrides in the base config
    steps: int
    tokens_per_step: int  # batch_size × seq_len
    planned_tokens: float  # the grid's D, or C / 6N on an IsoFLOP profile
    N: int  # non-embedding parameters (Kaplan et al. 2020's N)
    N_total: int

    @property
    def tokens(self) -> int:
        """Tokens actually trained on: whole steps, so within one step of the plan."""
        return self.steps * self.tokens_per_step

    @property
    def compute(self) -> float:
        return 6.0 * self.N * self.tokens  # Kaplan et al. 2.1: C ≈ 6ND


def _short(x: float) -> str:
    """1500000 -> '1.5e6': compact and safe in a directory name."""
    exponent = math.floor(math.log10(x))
    return f"{x / 10**exponent:.3g}e{exponent}"


def _validate(config: ml_collections.ConfigDict) -> None:
    for section in ("base", "sweep"):
        if section not in config:
            raise ConfigError(f"a sweep config needs a '{section}' section "
                              "(see configs/scaling_shakespeare.py)")
    check_keys(config, sweep_template(config.base.model.preset))
    plan = config.sweep
    if plan.mode not in MODES:
        raise ConfigError(f"sweep.mode {plan.mode!r} must be one of {MODES}")
    if not plan.sizes or any(len(s) != 3 for s in plan.sizes):
        raise ConfigError("sweep.sizes must list (d_model, num_layers, num_heads) triples")
    values = plan.tokens if plan.mode == "grid" else plan.budgets
    key = "sweep.tokens" if plan.mode == "grid" else "sweep.budgets"
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"sweep.mode '{plan.mode}' needs positive values in {key}")


def plan_sweep(config: ml_collections.ConfigDict) -> list[SweepPoint]:
    """The sweep's points within its limits, cheapest compute first."""
    return [point for point, why_not in plan_points(config) if not why_not]


def plan_points(config: ml_collections.ConfigDict) -> list[tuple[SweepPoint, str]]:
    """Every (point, why it is left out, or "") of the sweep, cheapest compute first."""
    _validate(config)
    base, plan = config.base, config.sweep
    seq_len = base.data.seq_len
    tokens_per_step = base.train.batch_size * seq_len
    points = []
    for d_model, num_layers, num_heads in plan.sizes:
        model = {"d_model": d_model, "num_layers": num_layers, "num_heads": num_heads,
                 "d_ff": 4 * d_model}
        cfg = ModelConfig.from_dict(base.model.to_dict() | model)
        # N at the trained length; N_total with the model's whole position table.
        n = param_count(transformer_shape(cfg, seq_len)).non_embedding
        n_total = param_count(transformer_shape(cfg, cfg.max_len)).total
        size = f"d{d_model}-l{num_layers}-h{num_heads}"
        if plan.mode == "grid":
            targets = [(f"{size}_D{_short(d)}", float(d)) for d in plan.tokens]
        else:
            targets = [(f"C{_short(c)}_{size}", c / (6.0 * n)) for c in plan.budgets]
        for name, planned in targets:
            steps = max(1, round(planned / tokens_per_step))
            point = SweepPoint(name, model, steps, tokens_per_step, planned, n, n_total)
            points.append((point, _outside_limits(point, plan)))
    return sorted(points, key=lambda p: (p[0].compute, p[0].name))


def _outside_limits(point: SweepPoint, plan: ml_collections.ConfigDict) -> str:
    min_steps, max_tokens = plan.get("min_steps", 0), plan.get("max_tokens", 0.0)
    if min_steps and point.steps < min_steps:
        return f"{point.steps} steps < sweep.min_steps={min_steps}"
    if max_tokens and point.tokens > max_tokens:
        return f"D={point.tokens:,} > sweep.max_tokens={max_tokens:.3g}"
    return ""


def point_config(config: ml_collections.ConfigDict, point: SweepPoint, tokenizer: str,
                 prepared_dir: str) -> ml_collections.ConfigDict:
    """The base pretraining config with this point's shape, steps and the shared data."""
    c = ml_collections.ConfigDict(config.base.to_dict())
    c.name = f"{config.name}/{point.name}"
    c.model.update(point.model)
    # The schedule (warmup, cosine to the end) is fitted to each point's own length:
    # Hoffmann et al. 2022 (3.1, fig. A1) show a cosine cycle longer than the run
    # overstates the loss at a given D.
    c.train.steps = point.steps
    c.optimizer.warmup_steps = min(c.optimizer.warmup_steps, point.steps // 10)
    c.data.tokenizer = tokenizer
    c.data.prepared_dir = prepared_dir
    return c


def _is_finished(run_dir: Path, point: SweepPoint) -> bool:
    summary = run_dir / "summary.json"
    if not summary.is_file():
        return False
    return json.loads(summary.read_text()).get("step") == point.steps


def _wall_seconds(run_dir: Path) -> float:
    """Wall time summed over every session that trained this point."""
    path = run_dir / "sweep.json"
    return json.loads(path.read_text())["wall_seconds"] if path.is_file() else 0.0


def _add_wall_seconds(run_dir: Path, seconds: float) -> None:
    storage.write_json(run_dir / "sweep.json",
                       {"wall_seconds": _wall_seconds(run_dir) + seconds}, indent=None)


def _epochs_note(point: SweepPoint, available_tokens: int) -> tuple[float, str]:
    epochs = point.tokens / available_tokens
    if epochs <= 1:
        return epochs, ""
    return epochs, (f"D={point.tokens:,} tokens exceeds the {available_tokens:,} training "
                    f"tokens available: {epochs:.2f} epochs (repeated tokens lower the loss "
                    "less than fresh ones)")


def _result_row(point: SweepPoint, run_dir: Path, available_tokens: int) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    records = read_metrics(str(run_dir / "metrics.jsonl"))
    train_losses = [r["loss"] for r in records if "loss" in r]
    # Median over logging windows: the first window also holds compilation.
    speeds = [r["tokens_per_sec"] for r in records if "tokens_per_sec" in r]
    epochs, note = _epochs_note(point, available_tokens)
    return {
        "name": point.name, "N": point.N, "N_total": point.N_total, "D": point.tokens,
        "C": point.compute, "steps": point.steps,
        "train_loss": train_losses[-1] if train_losses else math.nan,
        "eval_loss": summary["eval_loss"],
        "loss": summary["eval_loss"],  # what `lmscale scaling fit` fits: the held-out loss
        "wall_seconds": _wall_seconds(run_dir),
        "tokens_per_sec": statistics.median(speeds) if speeds else math.nan,
        "epochs": epochs, "notes": note,
    }


def write_results(rows: list[dict], sweep_dir: Path) -> tuple[Path, Path]:
    """results.csv and results.jsonl, each replaced whole so a reader never sees half."""
    csv_path, jsonl_path = sweep_dir / "results.csv", sweep_dir / "results.jsonl"
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    storage.write_text(csv_path, table.getvalue())
    storage.write_text(jsonl_path, "".join(json.dumps(row) + "\n" for row in rows))
    return csv_path, jsonl_path


def _shared_data(config: ml_collections.ConfigDict, sweep_dir: Path,
                 point: SweepPoint) -> tuple[str, str, int]:
    """Train the tokenizer and prepare the examples once for every point.

    Returns (tokenizer path, prepared-examples folder, training tokens available).
    """
    data_cfg = ml_collections.ConfigDict(config.base.data.to_dict())
    data_cfg.prepared_dir = str(sweep_dir / "data")
    model_cfg = ModelConfig.from_dict(config.base.model.to_dict() | point.model)
    # With data.tokenizer unset this trains one on the training split into
    # <sweep_dir>/tokenizer; every point then names that file, so the examples'
    # fingerprint (sources, seq_len, tokenizer bytes) is the same for all of them.
    data = prepare_pretraining_data(data_cfg, model_cfg, str(sweep_dir), data_cfg.seq_len,
                                    data_cfg.max_predictions_per_seq)
    tokenizer = storage.absolute(tokenizer_path(data_cfg, str(sweep_dir)))
    return tokenizer, data_cfg.prepared_dir, len(data.train) * data_cfg.seq_len


def run_sweep(config: ml_collections.ConfigDict, sweep_dir: str,
              max_points: int | None = None) -> list[dict]:
    """Run (or resume) every point; returns the results rows of the finished ones.

    `max_points` caps how many points this call trains (finished ones skipped don't
    count); the sweep also stops after a point that was preempted (SIGTERM).
    """
    for point, why_not in plan_points(config):
        if why_not:
            log.info("left out %s: %s", point.name, why_not)
    points = plan_sweep(config)
    if not points:
        raise ConfigError("every point of the sweep is outside sweep.min_steps / "
                          "sweep.max_tokens; relax them or change sizes and budgets")
    sweep_dir = storage.as_path(storage.absolute(sweep_dir))
    storage.write_text(sweep_dir / "config.json", to_json(config))
    tokenizer, prepared_dir, available = _shared_data(config, sweep_dir, points[0])
    log.info("sweep %s: %d points, %s training tokens available", config.name, len(points),
             f"{available:,}")
    for point in points:
        epochs, note = _epochs_note(point, available)
        if note:
            log.warning("%s: %s", point.name, note)
    rows: list[dict] = []
    trained = 0
    for point in points:
        run_dir = sweep_dir / point.name
        if not _is_finished(run_dir, point):
            if max_points is not None and trained >= max_points:
                break
            log.info("point %s: N=%s, D=%s (%d steps), C=%.3g", point.name, f"{point.N:,}",
                     f"{point.tokens:,}", point.steps, point.compute)
            start = time.perf_counter()
            summary = pretrain(point_config(config, point, tokenizer, prepared_dir),
                               str(run_dir))
            _add_wall_seconds(run_dir, time.perf_counter() - start)
            trained += 1
            if summary["stopped"] == "preempted":
                log.warning("sweep stopped at %s step %d; rerun to resume", point.name,
                            summary["step"])
                break
        rows.append(_result_row(point, run_dir, available))
        write_results(rows, sweep_dir)
    return rows
