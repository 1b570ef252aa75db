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


def _leaves_by_name(tree: Any) -> dict[str, Any]:
    """Leaves keyed by a path of plain names, alike for dicts and dataclasses."""
    def name(key) -> str:
        return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))
    return {"/".join(name(k) for k in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _shape_mismatches(stored_params: Any, target_params: Any) -> list[str]:
    """'path: checkpoint (a, b) vs model (c, d)' for every parameter whose shape differs."""
    stored_leaves = _leaves_by_name(stored_params)
    problems = []
    for name, leaf in _leaves_by_name(target_params).items():
        old = stored_leaves.get(name)
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
        self._manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()})

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, state: TrainState, config: dict, force: bool = False) -> None:
        step = int(state.step)
        if step in self._manager.all_steps():
            return
        try:
            # Also raises the error of an earlier asynchronous save, if it failed.
            self._manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                meta=ocp.args.JsonSave({"step": step, "config": config})), force=force)
        except _WRITE_ERRORS as err:
            raise _save_failed(self.directory, err) from err

    def wait(self) -> None:
        """Block until an asynchronous save is on disk; raise if it failed."""
        try:
            self._manager.wait_until_finished()
        except _WRITE_ERRORS as err:
            raise _save_failed(self.directory, err) from err

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
            problems = _shape_mismatches(stored["params"], target.params)
            if problems:
                raise CheckpointError(
                    f"checkpoint step {candidate} in {self.directory} was written for a "
                    "different model config:\n  " + "\n  ".join(problems[:10])
                    + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""))
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
        """Release the manager; a failed save is logged here, since `save`/`wait` on the
        normal path have raised it already."""
        try:
            self.wait()
        except CheckpointError as err:
            log.error("%s", err)
        finally:
            self._manager.close()


# Orbax surfaces storage failures (disk full, permissions) from tensorstore as ValueError
# or RuntimeError, not only OSError.
_WRITE_ERRORS = (OSError, ValueError, RuntimeError)


def _save_failed(directory: str, err: Exception) -> CheckpointError:
    reason = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
    return CheckpointError(
        f"saving a checkpoint to {directory} failed: {reason}. Earlier checkpoints are intact; "
        "free space or fix permissions, then run the same command again to resume")

