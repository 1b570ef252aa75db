"""The training loop: feed the compiled step, log, evaluate, checkpoint, stop cleanly.

It is shared by pretraining and fine-tuning; what differs between them (objective, data)
arrives already built. Side effects live here, not in the step.
"""

from __future__ import annotations

import logging
import signal
import tempfile
import time
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from lmscale import storage
from lmscale.data.loader import StepBatches
from lmscale.errors import ConfigError, InputError
from lmscale.train.metrics import MetricsWriter
from lmscale.train.state import TrainState
from lmscale.train.step import ShardedStep

log = logging.getLogger(__name__)


class NonFiniteLossError(InputError):
    """The loss turned NaN/inf; the state of the last good step is kept."""


@dataclass(frozen=True)
class LoopConfig:
    steps: int  # stop when the state reaches this step
    log_every: int
    eval_every: int
    eval_batches: int
    checkpoint_every: int
    # Trace steps [first, last) with jax.profiler into `profile_dir` (TensorBoard's profile
    # plugin and Perfetto read it); () = no trace.
    profile_steps: tuple[int, ...] = ()
    profile_dir: str = ""


@dataclass(frozen=True)
class Throughput:
    tokens_per_step: int  # real (non-padding) tokens are not distinguished: row length x batch
    flops_per_step: float
    peak_flops: float  # whole-mesh peak FLOP/s


class Preemption:
    """Set by SIGTERM (what Cloud TPU and SLURM send before taking a machine away) while
    used as a context manager; the previous handler is restored on exit."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self) -> Preemption:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum, frame) -> None:
        log.warning("SIGTERM received: stopping at the next step every process agrees on, "
                    "then saving")
        self.requested = True


def make_stop_vote(mesh: Mesh) -> Callable[[bool], jax.Array]:
    """This process's stop request -> a replicated "any process asked to stop" flag.

    SIGTERM reaches the processes of a multi-host job at slightly different moments; if
    each stopped on its own flag, one would wait forever in the next step's collectives
    while another saved. The vote is dispatched after each step like the step itself and
    read with its metrics, so every process sees the same answer for the same step at no
    extra host stall.
    """
    flat = Mesh(mesh.devices.reshape(-1), ("devices",))
    per_device = NamedSharding(flat, PartitionSpec("devices"))
    any_true = jax.jit(jnp.any, out_shardings=NamedSharding(flat, PartitionSpec()))
    shape = (flat.devices.size,)
    local_devices = list(per_device.addressable_devices_indices_map(shape))

    def ballot(requested: bool) -> jax.Array:
        # One flag per device, placed device by device: valid whatever order the mesh
        # gives each process's devices in.
        shards = [jax.device_put(np.full((1,), requested), d) for d in local_devices]
        return jax.make_array_from_single_device_arrays(shape, per_device, shards)

    # Both ballots are placed once, so a step adds only the small collective, no transfer.
    ballots = {False: ballot(False), True: ballot(True)}
    return lambda requested: any_true(ballots[bool(requested)])


def evaluate(sharded: ShardedStep, params, batches: StepBatches, num_batches: int,
             loss_terms: tuple[str, ...]) -> dict[str, float]:
    """Average each term over up to `num_batches` batches (one pass at most; rows that only
    fill the last batch carry weight 0, so each example counts once)."""
    total_batches = min(num_batches, -(-batches.num_examples // batches.global_batch_size))
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for i in range(total_batches):
        batch = batches[i] | {"example_weight": batches.first_pass_weights(i)}
        s, c = sharded.evaluate(params, sharded.global_batch(batch))
        for k in s:
            sums[k] = sums.get(k, 0.0) + float(s[k])
            counts[k] = counts.get(k, 0.0) + float(c[k])
    metrics = {f"eval_{k}": sums[k] / max(counts[k], 1.0) for k in sums}
    metrics["eval_loss"] = sum(metrics[f"eval_{t}"] for t in loss_terms)
    return metrics


def use_compilation_cache(directory: str) -> None:
    """Keep compiled programs in `directory` (JAX's persistent compilation cache), so a
    rerun or a resumed job skips compiling steps it compiled before; "" leaves it off."""
    if directory:
        jax.config.update("jax_compilation_cache_dir", directory)


class StepTrace:
    """A jax.profiler trace of steps [first, last) of the loop, with each end waiting for
    the device so the trace holds exactly those steps. A remote directory gets the trace
    copied when it ends: the profiler writes local files."""

    def __init__(self, steps: tuple[int, ...], directory: str):
        if steps and (len(steps) != 2 or not 0 <= steps[0] < steps[1] or not directory):
            raise ConfigError(f"train.profile_steps must be [first, last) with 0 <= first < "
                              f"last, got {list(steps)}")
        self.first, self.last = steps if steps else (-1, -1)
        self.directory = directory
        self.active = False

    def before(self, step: int, state) -> None:
        if step == self.first:
            jax.block_until_ready(state)
            self._local = (tempfile.mkdtemp(prefix="lmscale-profile-")
                           if storage.is_remote(self.directory) else self.directory)
            jax.profiler.start_trace(self._local)
            self.active = True
        elif step == self.last:
            self.stop(state)

    def stop(self, state) -> None:
        if self.active:
            jax.block_until_ready(state)
            jax.profiler.stop_trace()
            self.active = False
            if self._local != self.directory:
                storage.copy_tree(self._local, self.directory)
            log.info("wrote a profile of steps %d-%d to %s", self.first, self.last - 1,
                     self.directory)


def run_loop(sharded: ShardedStep, state: TrainState, train_batches: StepBatches,
             eval_batches: StepBatches | None, loop: LoopConfig, loss_terms: tuple[str, ...],
             writer: MetricsWriter, throughput: Throughput, is_main: bool = True,
             save_checkpoint: Callable[[TrainState, bool], Any] | None = None,
             preemption: Preemption | None = None) -> tuple[TrainState, str]:
    """Train until `loop.steps`; returns (state, why it stopped: "done" or "preempted").

    Metrics of step s are fetched after step s+1 is dispatched, so the host never stalls
    the device waiting for a scalar. A stop request seen while dispatching step s is agreed
    on by all processes with those metrics, and they all stop after step s+1.
    """
    start = int(state.step)
    pending: tuple[int, dict, jax.Array] | None = None
    window_start, window_steps = time.perf_counter(), 0
    bar = tqdm(total=loop.steps, initial=start, disable=not is_main, dynamic_ncols=True,
               desc="train")

    stop_vote = make_stop_vote(sharded.mesh)

    def report(step: int, metrics: dict, stop: jax.Array) -> bool:
        """Check and log step `step`'s metrics; returns whether any process asked to stop."""
        nonlocal window_start, window_steps
        values, stop = jax.device_get((metrics, stop))
        if not bool(values.pop("finite")):
            loss = float(values["loss"])
            if save_checkpoint is not None:
                save_checkpoint(state, True)
            raise NonFiniteLossError(
                f"the loss became {loss} at step {step + 1}; training stopped and the last "
                f"good state (step {int(state.step)}) was kept (lower "
                "optimizer.learning_rate or check the data)")
        if (step + 1) % loop.log_every and step + 1 != loop.steps:
            return bool(stop)
        elapsed = time.perf_counter() - window_start
        tokens_per_sec = throughput.tokens_per_step * window_steps / max(elapsed, 1e-9)
        flops = throughput.flops_per_step * window_steps / max(elapsed, 1e-9)
        values = {k: float(np.asarray(v)) for k, v in values.items()}
        values |= {"tokens_per_sec": tokens_per_sec,
                   "mfu": flops / throughput.peak_flops if throughput.peak_flops else 0.0}
        writer.write(step + 1, values)
        bar.set_postfix(loss=f"{values['loss']:.3f}", tok_s=f"{tokens_per_sec:,.0f}")
        window_start, window_steps = time.perf_counter(), 0
        return bool(stop)

    stopped, stop_agreed = "done", False
    trace = StepTrace(loop.profile_steps, loop.profile_dir)
    # Batches of the coming steps are assembled on other threads (or processes) while the
    # device runs this one; each is still train_batches[step] (`StepBatches.iterate`).
    host_batches = train_batches.iterate(start, loop.steps)
    try:
        for step in range(start, loop.steps):
            trace.before(step, state)
            batch = sharded.global_batch(next(host_batches))
            state, metrics = sharded.train(state, batch)
            vote = stop_vote(preemption is not None and preemption.requested)
            window_steps += 1
            if pending is not None:
                stop_agreed |= report(*pending)
            pending = (step, metrics, vote)
            bar.update(1)
            done = step + 1
            if eval_batches is not None and loop.eval_every and done % loop.eval_every == 0:
                stop_agreed |= report(*pending)
                pending = None
                writer.write(done, evaluate(sharded, state.params, eval_batches,
                                            loop.eval_batches, loss_terms))
            checkpoint_due = loop.checkpoint_every and done % loop.checkpoint_every == 0
            if save_checkpoint is not None and checkpoint_due:
                save_checkpoint(state, False)
            if stop_agreed:
                stopped = "preempted"
                break
    finally:
        host_batches.close()
    if pending is not None:
        report(*pending)
    trace.stop(state)
    bar.close()
    if save_checkpoint is not None and int(state.step) > start:
        save_checkpoint(state, True)
    return state, stopped
