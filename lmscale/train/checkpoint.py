"""Orbax checkpoints of the train state, the data position and the resolved config.

Saves are asynchronous and atomic, so a step directory that exists is complete. Locally
Orbax writes a temporary directory and renames it when every process has finished; on an
object store (gs://), which cannot rename, it writes into the step directory and adds a
`commit_success.txt` last, and a step without it is not a checkpoint (Orbax's own rule).
Restore builds its target from the *current* mesh's shardings, so a run resumes on any mesh
shape or process count. A latest checkpoint that cannot be read is reported and the
previous one used. The vocabulary axis alone may differ (its padding depends on the tensor-parallel
size, see `lmscale.models.vocab`): restore then cuts or zero-pads padding rows.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from lmscale import storage
from lmscale.errors import InputError
from lmscale.models.vocab import is_vocab_param
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


def _padding_differs(name: str, stored: tuple, target: tuple, real_vocab: int | None) -> bool:
    """Whether `stored` and `target` differ only in padding rows of a vocabulary parameter,
    which a restore may cut or fill with zeros: never a row of the `real_vocab` tokens."""
    return (real_vocab is not None and is_vocab_param(name.split("/"))
            and len(stored) == len(target) and stored[1:] == target[1:]
            and min(stored[0], target[0]) >= real_vocab)


def _shape_mismatches(stored: Any, target: Any, real_vocab: int | None = None,
                      prefix: str = "") -> tuple[list[str], bool]:
    """(problems, padding differs): 'path: checkpoint (a, b) vs model (c, d)' for every
    leaf whose shape differs other than in vocabulary padding rows (`_padding_differs`),
    and whether some differ only there. A leaf missing from `stored` is a problem too,
    except in optimiser state (`prefix`), whose structure Orbax checks itself."""
    stored_leaves = _leaves_by_name(stored)
    problems, padding = [], False
    for name, leaf in _leaves_by_name(target).items():
        old = stored_leaves.get(name)
        name = prefix + name
        if old is None:
            if not prefix:
                problems.append(f"{name}: missing from the checkpoint")
            continue
        old_shape, new_shape = tuple(getattr(old, "shape", ())), tuple(np.shape(leaf))
        if old_shape == new_shape:
            continue
        if _padding_differs(name, old_shape, new_shape, real_vocab):
            padding = True
        else:
            problems.append(f"{name}: checkpoint {old_shape} vs model {new_shape}")
    return problems, padding


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3, keep_every: int = 0,
                 async_save: bool = True):
        self.directory = storage.absolute(directory)
        try:
            storage.makedirs(self.directory)
        except OSError as err:
            raise CheckpointError(f"cannot create checkpoint directory {self.directory!r}: "
                                  f"{err.strerror or err}") from err
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

    def _stored_vocab_size(self, step: int) -> int | None:
        """model.vocab_size of the config saved with `step`, if it names one."""
        try:
            meta = self._manager.restore(step, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore()))["meta"]
            return int(meta["config"]["model"]["vocab_size"])
        except Exception:  # noqa: BLE001 - no readable config: no padding tolerance
            return None

    def restore(self, abstract: TrainState, shardings: TrainState, step: int | None = None,
                vocab_size: int | None = None) -> TrainState | None:
        """The newest readable checkpoint (or `step`) laid out for the current mesh, or None
        when there is none. Unreadable newer checkpoints are reported and skipped.

        The vocabulary rows may differ (padded for another tensor-parallel size): padding
        rows are cut or zero-filled, never the rows of the checkpoint config's
        `model.vocab_size` tokens. `vocab_size`, the current model's, when given must equal
        the checkpoint's. Any other shape difference is refused, naming the shapes.
        """
        target = abstract_target(abstract, shardings)
        candidates = [step] if step is not None else sorted(self.steps(), reverse=True)
        for candidate in candidates:
            try:
                stored = self._manager.item_metadata(candidate)["state"]
            except Exception as err:  # noqa: BLE001 - any unreadable metadata means corrupt
                log.warning("checkpoint step %d in %s is unreadable (%s); trying an older one",
                            candidate, self.directory, err)
                continue
            stored_vocab = self._stored_vocab_size(candidate)
            real_vocab = stored_vocab if stored_vocab is not None else vocab_size
            problems, padding = _shape_mismatches(stored["params"], target.params, real_vocab)
            if "opt_state" in stored:
                more, opt_padding = _shape_mismatches(stored["opt_state"], target.opt_state,
                                                      real_vocab, prefix="opt_state/")
                problems, padding = problems + more, padding or opt_padding
            if vocab_size is not None and stored_vocab not in (None, vocab_size):
                problems.insert(0, f"model.vocab_size: checkpoint {stored_vocab} vs model "
                                   f"{vocab_size}")
            if problems:
                raise CheckpointError(
                    f"checkpoint step {candidate} in {self.directory} was written for a "
                    "different model config:\n  " + "\n  ".join(problems[:10])
                    + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""))
            if padding:
                log.info("checkpoint step %d: vocabulary padding resized to the model's",
                         candidate)
            try:
                # strict=False lets Orbax cut or zero-pad arrays whose shapes differ; the
                # check above allows that only for vocabulary padding rows.
                restored = self._manager.restore(candidate, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target, strict=not padding)))
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
        chosen = steps[-1] if step is None else step
        path = storage.as_path(self.directory) / str(chosen) / "state"
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

