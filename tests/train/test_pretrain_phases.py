"""BERT's sequence-length phases: every phase's data is prepared before step 0, and a run
resumed at the phase boundary continues bit for bit (slow: two tiny BERT runs)."""

import json
import os
import shutil

import jax.numpy as jnp
import pytest

from lmscale.cli import _load_config
from lmscale.train import pretrain as pretrain_module

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(corpus: str, tokenizer: str, prepared: str):
    return _load_config(os.path.join(REPO, "configs", "bert_tiny.py"), [
        f"data.sources=['{corpus}']", f"data.tokenizer={tokenizer}",
        f"data.prepared_dir={prepared}", "data.phases=[(0.5, 16, 3), (1.0, 32, 5)]",
        "model.vocab_size=512", "model.d_model=32", "model.num_heads=2", "model.d_ff=64",
        "model.num_layers=1", "model.max_len=32", "train.batch_size=8", "train.steps=4",
        "train.eval_every=0", "train.log_every=1", "train.checkpoint_every=1",
        "train.keep_checkpoints=4", "train.samples=0", "train.peak_flops=1e11",
        "train.prefetch_batches=2"])


def _losses(workdir) -> dict[int, float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def _spy(monkeypatch, events: list, train: bool):
    """Record each preparation (its length) and each phase's training (first and end step);
    without `train`, a phase's training only moves the step to the phase's end."""
    prepare, run_loop = pretrain_module.prepare_pretraining_data, pretrain_module.run_loop

    def spy_prepare(data_cfg, model_cfg, workdir, seq_len, *args):
        events.append(("prepare", seq_len))
        return prepare(data_cfg, model_cfg, workdir, seq_len, *args)

    def spy_run_loop(sharded, state, train_batches, eval_batches, loop, *args, **kwargs):
        events.append(("train", int(state.step), loop.steps))
        if train:
            return run_loop(sharded, state, train_batches, eval_batches, loop, *args, **kwargs)
        return state.replace(step=jnp.asarray(loop.steps, state.step.dtype)), "done"

    monkeypatch.setattr(pretrain_module, "prepare_pretraining_data", spy_prepare)
    monkeypatch.setattr(pretrain_module, "run_loop", spy_run_loop)


def test_every_phase_is_prepared_before_step_0(docstring_corpus, docstring_tokenizer,
                                               tmp_path, monkeypatch):
    events = []
    _spy(monkeypatch, events, train=False)
    config = _config(docstring_corpus, docstring_tokenizer, str(tmp_path / "prepared"))
    assert pretrain_module.pretrain(config, str(tmp_path / "run"))["step"] == 4
    # Both lengths are prepared before the first step; nothing is built between phases.
    assert events == [("prepare", 16), ("prepare", 32), ("train", 0, 2), ("train", 2, 4)]


@pytest.mark.slow
def test_a_run_resumed_at_the_phase_boundary_continues_bit_for_bit(
        docstring_corpus, docstring_tokenizer, tmp_path, monkeypatch):
    events = []
    _spy(monkeypatch, events, train=True)
    config = _config(docstring_corpus, docstring_tokenizer, str(tmp_path / "prepared"))
    run = tmp_path / "run"
    assert pretrain_module.pretrain(config, str(run))["step"] == 4
    assert events == [("prepare", 16), ("prepare", 32), ("train", 0, 2), ("train", 2, 4)]
    expected = _losses(run)
    assert sorted(expected) == [1, 2, 3, 4]

    # Back to the checkpoint at the boundary (as if preempted there), then resume.
    for step in ("3", "4"):
        shutil.rmtree(run / "checkpoints" / step)
    events.clear()
    assert pretrain_module.pretrain(config, str(run))["step"] == 4
    assert events == [("prepare", 16), ("prepare", 32), ("train", 2, 4)]
    got = _losses(run)
    assert sorted(got) == [1, 2, 3, 4]
    assert [got[s] for s in (3, 4)] == [expected[s] for s in (3, 4)]  # bitwise
