"""`lmscale plan --search`: the mesh, remat policy and micro-batching that fit a target,
ranked by estimated step time.

For every valid tensor size and split of the rest between `data` and `fsdp` (pure FSDP,
and pure data parallelism when the replicated state can fit), and every remat policy, the
fewest micro-batches that fit are found: memory is read from the compiled program, and
accumulation only slows a step that already fits. Each candidate is a full `plan` in a
process of its own (a compiler crash loses that candidate only); after a refusal the next
micro-batch count tried is scaled by how far over memory it was.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import ml_collections

from lmscale.models.config import tensor_parallel_sizes
from lmscale.parallel.topology import Target, topology_devices
from lmscale.plan.planner import Plan, PlanDoesNotFit, plan
from lmscale.plan.recipe import model_config

SEARCH_REMAT = ("none", "dots_no_batch", "full")
ADAM_BYTES_PER_PARAM = 12  # float32 parameters and two moments


@dataclass(frozen=True)
class Candidate:
    data: int
    fsdp: int
    tensor: int
    remat_policy: str
    grad_accum_steps: int

    def apply(self, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
        c = ml_collections.ConfigDict(config.to_dict())
        c.mesh.data, c.mesh.fsdp, c.mesh.tensor = self.data, self.fsdp, self.tensor
        c.model.remat_policy = self.remat_policy
        c.train.grad_accum_steps = self.grad_accum_steps
        return c


@dataclass(frozen=True)
class Outcome:
    candidate: Candidate
    plan: Plan | None
    reason: str  # why it does not fit, when plan is None


def meshes(devices: int, tensor_sizes: list[int], params: int,
           hbm_bytes: int) -> list[tuple[int, int, int]]:
    result = []
    for tensor in tensor_sizes:
        if devices % tensor:
            continue
        rest = devices // tensor
        result.append((1, rest, tensor))
        replicated = ADAM_BYTES_PER_PARAM * params / tensor
        if rest > 1 and replicated < hbm_bytes:
            result.append((rest, 1, tensor))
    return result


def search(config: ml_collections.ConfigDict, target: Target, params: int,
           max_tensor: int = 8, remat_policies: tuple[str, ...] = SEARCH_REMAT,
           progress=None) -> list[Outcome]:
    """Every candidate's outcome, fitting plans first and fastest first."""
    devices = len(topology_devices(target))
    tensor_sizes = [t for t in tensor_parallel_sizes(model_config(config, 1)) if t <= max_tensor]
    batch = config.train.batch_size
    outcomes = []
    for data, fsdp, tensor in meshes(devices, tensor_sizes, params, target.chip.hbm_bytes):
        ways = data * fsdp
        splits = [a for a in _powers_of_two(batch) if (batch // a) % ways == 0]
        for remat in remat_policies:
            outcomes += _fewest_micro_batches(config, target, data, fsdp, tensor, remat,
                                              splits, progress)
    return sorted(outcomes, key=lambda o: (o.plan is None,
                                           o.plan.step_seconds if o.plan else 0.0))


def _fewest_micro_batches(config, target: Target, data: int, fsdp: int, tensor: int,
                          remat: str, splits: list[int], progress) -> list[Outcome]:
    """Outcomes for one mesh and remat policy: from one micro-batch up, jumping by how far
    the compiler said the memory was over (activations shrink with the micro-batch)."""
    outcomes, index = [], 0
    while index < len(splits):
        candidate = Candidate(data, fsdp, tensor, remat, splits[index])
        if progress:
            progress(candidate)
        kind, result = _plan_in_child(candidate.apply(config), target)
        if kind == "refused":
            needed, available, message = result
            outcomes.append(Outcome(candidate, None, message))
            over = (needed or 2 * available) / available
            wanted = candidate.grad_accum_steps * over
            index = max(index + 1, next((i for i, a in enumerate(splits) if a >= wanted),
                                        len(splits)))
            continue
        if kind == "crashed":
            outcomes.append(Outcome(candidate, None, result))
            break
        if result.fits:
            outcomes.append(Outcome(candidate, result, ""))
            break
        outcomes.append(Outcome(candidate, None, "exceeds HBM"))
        index += 1
    return outcomes


def _plan_in_child(config: ml_collections.ConfigDict, target: Target):
    """`plan` in a fresh process, so that a compiler crash (libtpu 0.0.42 overflows its
    stack on some attention-dropout programs) costs one candidate, not the search.
    Returns ("plan", Plan), ("refused", (needed, available, message)) or ("crashed", why)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            return pool.submit(_plan_child, config, target).result()
        except BrokenProcessPool:
            return "crashed", "the compiler crashed on this candidate (see docs/plan.md)"


def _plan_child(config: ml_collections.ConfigDict, target: Target):
    try:
        return "plan", plan(config, target, compile_eval=False)
    except PlanDoesNotFit as err:
        return "refused", (err.needed, err.available, str(err).split(" (")[0])


def _powers_of_two(limit: int) -> list[int]:
    result, n = [], 1
    while n <= limit:
        result.append(n)
        n *= 2
    return result
