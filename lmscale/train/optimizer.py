"""Optimiser recipes (optax): AdamW with warmup, then linear (BERT) or cosine (GPT-2) decay."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax

from lmscale.errors import ConfigError

SCHEDULES = ("linear", "cosine", "constant")


@dataclass(frozen=True)
class OptimizerConfig:
    learning_rate: float
    warmup_steps: int
    schedule: str  # "linear" (BERT: to final fraction, 0), "cosine" (GPT-2), "constant"
    final_lr_fraction: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01
    clip_norm: float | None = 1.0

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optimizer.schedule {self.schedule!r} must be one of {SCHEDULES}")
        if self.learning_rate <= 0:
            raise ConfigError("optimizer.learning_rate must be positive")
        if self.warmup_steps < 0:
            raise ConfigError("optimizer.warmup_steps must be >= 0")


def make_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to the peak over `warmup_steps`, then the chosen decay, reaching
    `final_lr_fraction * peak` at `total_steps`."""
    peak, warmup = cfg.learning_rate, min(cfg.warmup_steps, total_steps)
    end = cfg.final_lr_fraction * peak
    decay_steps = max(total_steps - warmup, 1)
    if cfg.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.final_lr_fraction)
    elif cfg.schedule == "linear":
        decay = optax.linear_schedule(peak, end, decay_steps)
    else:
        decay = optax.constant_schedule(peak)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def decay_mask(params) -> object:
    """Weight decay on matmul kernels and embeddings only; never on LayerNorm or biases
    (BERT's AdamWeightDecayOptimizer excludes "LayerNorm" and "bias")."""
    def decays(path, _) -> bool:
        name = path[-1].key if hasattr(path[-1], "key") else str(path[-1])
        return name in ("kernel", "embedding")
    return jax.tree_util.tree_map_with_path(decays, params)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """`optax.clip_by_global_norm`, scaling by a multiplication: XLA fuses a multiply by a
    scalar into every consumer of the gradient (Adam's two moments and the update), while
    optax's division is materialised first, one more write and read of every gradient
    (seen in the HLO of a CPU step). Same state (none), same clipped gradients up to
    rounding."""
    def update(updates, state, params=None):
        del params
        norm = optax.tree.norm(updates)
        scale = jnp.minimum(1.0, max_norm / norm)  # norm 0: max_norm / 0 = inf -> 1
        return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    schedule = make_schedule(cfg, total_steps)
    adamw = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                        weight_decay=cfg.weight_decay, mask=decay_mask)
    if cfg.clip_norm:
        return optax.chain(clip_by_global_norm(cfg.clip_norm), adamw)
    return adamw
