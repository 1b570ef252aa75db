"""Orbax checkpoints of the train state, the data position and the resolved config.

Saves are asynchronous and atomic (Orbax writes a temporary directory and renames it when
every process has finished), so a step directory that exists is complete. Restore builds
its target from the *current* mesh's shardings, so a run resumes on any mesh shape or
process count. A latest checkpoint that cannot be read is reported and the previous one
used.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from lmscale.errors import InputError
from lmscale.train.state import TrainState

log = logging.getLogger(__name__)


class CheckpointError(InputError):
    """A checkpoint cannot be written or does not fit the current model."""


def abstract_target(abstract: TrainState, shardings: TrainState) -> TrainState:
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)


def _shape_mismatches(stored: Any, target: Any) -> list[str]:
    """'path: checkpoint (a, b) vs model (c, d)' for every leaf whose shape differs."""
    stored_leaves = dict(jax.tree_util.tree_flatten_with_path(stored)[0])
    problems = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]:
        old = stored_leaves.get(path)
        name = jax.tree_util.keystr(path)
        if old is None:
            problems.append(f"{name}: missing from the checkpoint")
        elif tuple(old.shape) != tuple(leaf.shape):
            problems.append(f"{name}: checkpoint {tuple(old.shape)} vs model {tuple(leaf.shape)}")
    return problems


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3, keep_every: int = 0,
                 async_save: bool = True):
        self.directory = os.path.abspath(directory)
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as err:
            raise CheckpointError(f"cannot create checkpoint directory {self.directory!r}: "
                                  f"{err.strerror}") from err
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, keep_period=keep_every or None,
            enable_async_checkpointing=async_save, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, state: TrainState, config: dict, force: bool = False) -> None:
        step = int(state.step)
        if step in self._manager.all_steps():
            return
        try:
            self._manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                meta=ocp.args.JsonSave({"step": step, "config": config})), force=force)
        except OSError as err:
            raise CheckpointError(
                f"saving step {step} to {self.directory} failed ({err}); earlier checkpoints "
                "are intact. Free space or fix permissions, then resume") from err

    def wait(self) -> None:
        try:
            self._manager.wait_until_finished()
        except OSError as err:
            raise CheckpointError(f"finishing a save in {self.directory} failed ({err}); "
                                  "earlier checkpoints are intact") from err

    def restore(self, abstract: TrainState, shardings: TrainState,
                step: int | None = None) -> TrainState | None:
        """The newest readable checkpoint (or `step`) laid out for the current mesh, or None
        when there is none. Unreadable newer checkpoints are reported and skipped."""
        target = abstract_target(abstract, shardings)
        candidates = [step] if step is not None else sorted(self.steps(), reverse=True)
        for candidate in candidates:
            try:
                stored = self._manager.item_metadata(candidate)["state"]
            except Exception as err:  # noqa: BLE001 - any unreadable metadata means corrupt
                log.warning("checkpoint step %d in %s is unreadable (%s); trying an older one",
                            candidate, self.directory, err)
                continue
            problems = _shape_mismatches(stored, target) if stored is not None else []
            if problems:
                raise CheckpointError(
                    f"checkpoint step {candidate} in {self.directory} was written for a "
                    "different model config:\n  " + "\n  ".join(problems[:10]))
            try:
                restored = self._manager.restore(candidate, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target)))
            except Exception as err:  # noqa: BLE001 - Orbax raises many types for bad files
                log.warning("checkpoint step %d in %s cannot be restored (%s); trying an "
                            "older one", candidate, self.directory, err)
                continue
            log.info("restored step %d from %s", candidate, self.directory)
            return restored["state"]
        if candidates:
            raise CheckpointError(f"no readable checkpoint in {self.directory} (tried steps "
                                  f"{candidates}); delete the directory to start afresh")
        return None

    def restore_params(self, step: int | None = None) -> Any:
        """Only the model parameters of the newest checkpoint (or `step`), as host numpy
        arrays (what fine-tuning and export start from; the optimiser state is not read)."""
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        path = os.path.join(self.directory, str(steps[-1] if step is None else step), "state")
        with ocp.PyTreeCheckpointer() as reader:
            stored = reader.metadata(path).item_metadata.tree["params"]
            target = {"params": jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), stored)}
            as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
            restored = reader.restore(path, args=ocp.args.PyTreeRestore(
                item=target, restore_args=as_numpy, partial_restore=True))
        return restored["params"]

    def close(self) -> None:
        self.wait()
        self._manager.close()

