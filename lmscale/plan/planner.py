"""Compile exactly the step a config trains, for a Cloud TPU topology, and judge it.

The program that runs is compiled once per sequence-length phase (layers scanned, the
config's mesh, remat policy, micro-batching and dtypes): that gives the memory, whether it
fits, and the traffic of HBM and collectives per device (`analysis.compiled_cost`, loops
counted as often as they run). XLA's FLOP count of a compiled program counts a loop body
once, and on a sharded program it misses the matmuls the partitioner turns into loops of
its own, so FLOPs come from XLA's cost analysis of the whole, unpartitioned step with its
layers unrolled and the batch in one piece: the same model, remat policy and dtypes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import ml_collections

from lmscale.errors import ConfigError
from lmscale.models.config import check_tensor_parallel
from lmscale.parallel.mesh import MESH_AXES, make_mesh
from lmscale.parallel.topology import Target, topology_devices
from lmscale.plan.analysis import (
    Cost, DoesNotFit, Memory, compile_lowered, compiled_cost, memory, sharded_bytes,
)
from lmscale.plan.recipe import Recipe, config_kind, model_config, recipe_for
from lmscale.plan.roofline import Estimate, estimate
from lmscale.train.step import build_sharded_step, check_batch_split


@dataclass(frozen=True)
class PhasePlan:
    seq_len: int
    steps: int
    train_memory: Memory
    eval_memory: Memory | None
    per_device: Cost  # one whole step, per device
    model_flops: float  # analytic, whole mesh
    tokens: int
    estimate: Estimate

    @property
    def largest(self) -> tuple[str, Memory]:
        """The program (train or eval) that needs the most memory, and its memory."""
        if self.eval_memory and self.eval_memory.total > self.train_memory.total:
            return "eval", self.eval_memory
        return "train", self.train_memory

    @property
    def peak_bytes(self) -> int:
        return self.largest[1].total


@dataclass(frozen=True)
class Plan:
    target: Target
    mesh: dict[str, int]
    kind: str
    remat_policy: str
    grad_accum_steps: int
    compute_dtype: str
    padded_vocab: tuple[int, int]  # (vocab, padded)
    phases: tuple[PhasePlan, ...]

    @property
    def hbm_bytes(self) -> int:
        return self.target.chip.hbm_bytes

    @property
    def binding(self) -> PhasePlan:
        """The phase that needs the most memory per device."""
        return max(self.phases, key=lambda p: p.peak_bytes)

    @property
    def fits(self) -> bool:
        return self.binding.peak_bytes <= self.hbm_bytes

    @property
    def step_seconds(self) -> float:
        """Mean estimated step time over the run's phases, weighted by their steps."""
        steps = sum(p.steps for p in self.phases)
        return sum(p.estimate.step_seconds * p.steps for p in self.phases) / steps

    @property
    def mfu(self) -> float:
        steps = sum(p.steps for p in self.phases)
        return sum(p.estimate.mfu * p.steps for p in self.phases) / steps

    def overrides(self) -> list[str]:
        return ([f"--config.mesh.{axis}={self.mesh[axis]}" for axis in MESH_AXES]
                + [f"--config.model.remat_policy={self.remat_policy}",
                   f"--config.train.grad_accum_steps={self.grad_accum_steps}"])


class PlanDoesNotFit(ConfigError):
    """A config whose step needs more memory per device than the target's chips have."""

    def __init__(self, target: Target, needed: int | None, phase: str, detail: str,
                 levers: list[str]):
        have = target.chip.hbm_bytes
        need = f"{gib(needed)} per device" if needed else "more than it has"
        super().__init__(
            f"does not fit on {target.describe()}: the {phase} step needs {need}, and a "
            f"{target.chip.name} device has {gib(have)} of HBM ({detail}). Levers: "
            + "; ".join(levers))
        self.needed, self.available = needed, have


def gib(n: int | float) -> str:
    return f"{n / 2**30:.2f} GiB"


def plan(config: ml_collections.ConfigDict, target: Target, devices: list | None = None,
         compile_eval: bool = True) -> Plan:
    """Compile `config`'s steps for `target` (raises `PlanDoesNotFit` when they cannot fit)."""
    devices = topology_devices(target) if devices is None else devices
    kind = config_kind(config)
    mesh = make_mesh(config.mesh.to_dict(), devices)
    tensor = mesh.shape["tensor"]
    model = model_config(config, tensor)
    check_tensor_parallel(model, tensor)
    accum = config.train.grad_accum_steps
    check_batch_split(config.train.batch_size, accum, mesh)
    recipe = recipe_for(kind, model, config)
    phases = []
    for index, phase in enumerate(recipe.phases):
        sharded = build_sharded_step(recipe.objective, recipe.optimizer, recipe.schedule, mesh,
                                     phase.batch, accum, recipe.seed)
        state_bytes = sharded_bytes(sharded.abstract_state, sharded.state_shardings)
        name = f"length-{phase.seq_len} train"
        compiled = _compiled(sharded.lower_train, target, name, config)
        train_memory = memory(compiled, state_bytes)
        eval_memory = None
        if compile_eval:
            params_bytes = sharded_bytes(sharded.abstract_state.params,
                                         sharded.state_shardings.params)
            eval_memory = memory(_compiled(sharded.lower_evaluate, target,
                                           f"length-{phase.seq_len} eval", config), params_bytes)
        per_device = compiled_cost(compiled, step_flops(kind, model, config, index) / mesh.size)
        tokens = phase.batch["input_ids"].shape[0] * phase.seq_len
        phases.append(PhasePlan(
            phase.seq_len, phase.steps, train_memory, eval_memory, per_device,
            phase.model_flops, tokens,
            estimate(per_device, target.chip, model.compute_dtype, mesh.size,
                     phase.model_flops, tokens)))
    return Plan(target, dict(mesh.shape), kind, model.remat_policy, accum,
                model.compute_dtype, (model.vocab_size, model.padded_vocab_size),
                tuple(phases))


def _compiled(lower, target: Target, phase: str, config: ml_collections.ConfigDict):
    try:
        return compile_lowered(lower())
    except DoesNotFit as err:
        raise PlanDoesNotFit(target, err.needed, phase, str(err), levers(config)) from err


def step_flops(kind: str, model, config: ml_collections.ConfigDict, phase_index: int) -> float:
    """FLOPs of one whole step by XLA's cost analysis of the unpartitioned program (one CPU
    device, layers unrolled, no micro-batching; lowered, not compiled: it takes seconds)."""
    unrolled = dataclasses.replace(model, scan_layers=False)
    recipe: Recipe = recipe_for(kind, unrolled, config)
    mesh = make_mesh({"data": 1}, jax.devices("cpu")[:1])
    sharded = build_sharded_step(recipe.objective, recipe.optimizer, recipe.schedule, mesh,
                                 recipe.phases[phase_index].batch, 1, recipe.seed)
    analysis = sharded.lower_train().cost_analysis()
    return float(analysis["flops"])


def levers(config: ml_collections.ConfigDict) -> list[str]:
    """What would lower the memory per device, given what the config already does."""
    found = []
    if config.model.remat_policy != "full":
        found.append("recompute more activations (--config.model.remat_policy=full)")
    batch, accum = config.train.batch_size, config.train.grad_accum_steps
    if batch % (2 * accum) == 0:
        found.append(f"accumulate gradients over more micro-batches "
                     f"(--config.train.grad_accum_steps={2 * accum})")
    if config.model.family == "gpt" and not config.model.get("loss_chunk"):
        found.append("compute the loss a chunk of positions at a time, never holding the "
                     "whole [batch, length, vocab] logits (--config.model.loss_chunk=256)")
    if config.mesh.fsdp == 1:
        found.append("shard parameters and optimiser state (--config.mesh.fsdp=-1 "
                     "--config.mesh.data=1)")
    found.append("split the model with tensor parallelism (--config.mesh.tensor)")
    found.append("a larger slice (--target), or `lmscale plan --search` to try these")
    return found
