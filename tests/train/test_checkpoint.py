"""Checkpoints: resume on another mesh, and faults (truncated checkpoint, another model's
checkpoint, a full disk) reported clearly with earlier checkpoints intact."""

import os
import resource
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from lmscale.cli import main
from lmscale.config import apply_overrides, load_config_file
from lmscale.models import ModelConfig
from lmscale.parallel.mesh import make_mesh
from lmscale.train.bench import synthetic_batch
from lmscale.train.checkpoint import Checkpointer, CheckpointError
from lmscale.train.optimizer import OptimizerConfig, make_optimizer, make_schedule
from lmscale.train.objectives import objective_for
from lmscale.train.step import build_sharded_step, state_shardings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "gpt2_tiny.py")


def overrides(corpus: str, steps: int, mesh=(2, 2, 2), d_model: int = 32) -> list[str]:
    return [f"--config.data.sources=['{corpus}']", "--config.model.vocab_size=512",
            f"--config.model.d_model={d_model}", "--config.model.num_heads=2",
            "--config.model.d_ff=64", "--config.model.num_layers=2", "--config.model.max_len=32",
            "--config.data.seq_len=32", "--config.train.batch_size=8",
            f"--config.train.steps={steps}", "--config.train.eval_every=0",
            "--config.train.checkpoint_every=2", "--config.train.samples=0",
            "--config.train.peak_flops=1e11", "--config.train.keep_checkpoints=5",
            f"--config.mesh.data={mesh[0]}", f"--config.mesh.fsdp={mesh[1]}",
            f"--config.mesh.tensor={mesh[2]}"]


@pytest.fixture(scope="module")
def run(docstring_corpus, tmp_path_factory):
    """A 4-step run on a (2, 2, 2) mesh with checkpoints at steps 2 and 4."""
    workdir = tmp_path_factory.mktemp("ckpt") / "run"
    assert main(["pretrain", "--config", CONFIG, "--workdir", str(workdir),
                 *overrides(docstring_corpus, 4)]) == 0
    return {"corpus": docstring_corpus, "workdir": workdir}


def pieces(run, mesh_shape, devices, d_model=32):
    config = load_config_file(CONFIG)
    apply_overrides(config, [o[len("--config."):] for o in
                             overrides(run["corpus"], 4, mesh_shape, d_model)])
    model_cfg = ModelConfig.from_dict(config.model.to_dict())
    opt_cfg = OptimizerConfig(**config.optimizer.to_dict())
    objective = objective_for(model_cfg)
    optimizer, schedule = make_optimizer(opt_cfg, 4), make_schedule(opt_cfg, 4)
    mesh = make_mesh(dict(zip(("data", "fsdp", "tensor"), mesh_shape)), devices)
    batch = synthetic_batch(model_cfg, 8, 32, 1)
    abstract, shardings = state_shardings(objective, optimizer, batch, mesh)
    step = build_sharded_step(objective, optimizer, schedule, mesh, batch)
    return abstract, shardings, step, batch


def restore_and_step(run, workdir, mesh_shape, devices):
    abstract, shardings, step, batch = pieces(run, mesh_shape, devices)
    state = Checkpointer(os.path.join(workdir, "checkpoints")).restore(abstract, shardings)
    restored_step, params = int(state.step), jax.device_get(state.params)
    _, metrics = step.train(state, step.global_batch(batch))  # donates `state`
    return restored_step, params, float(metrics["loss"])


def test_a_checkpoint_resumes_on_other_meshes_and_one_device(run):
    devices = jax.devices()
    step0, params0, loss0 = restore_and_step(run, run["workdir"], (2, 2, 2), devices)
    assert step0 == 4
    for shape, devs in [((8, 1, 1), devices), ((1, 1, 1), devices[:1])]:
        step, params, loss = restore_and_step(run, run["workdir"], shape, devs)
        assert step == 4
        for a, b in zip(jax.tree.leaves(params0), jax.tree.leaves(params)):
            np.testing.assert_array_equal(a, b)
        assert loss == pytest.approx(loss0, rel=1e-6), shape


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous(run, tmp_path, caplog):
    workdir = tmp_path / "run"
    shutil.copytree(run["workdir"], workdir)
    state_dir = workdir / "checkpoints" / "4" / "state"
    for root, _, files in os.walk(state_dir):
        for name in files:
            if "manifest" in name or name.endswith(".ocdbt") or "d/" in os.path.join(root, name):
                with open(os.path.join(root, name), "r+b") as f:
                    f.truncate(0)
    step, _, _ = restore_and_step(run, workdir, (8, 1, 1), jax.devices())
    assert step == 2
    assert "checkpoint step 4" in caplog.text


def test_a_checkpoint_of_another_model_names_the_mismatched_shapes(run, tmp_path, capsys):
    abstract, shardings, _, _ = pieces(run, (8, 1, 1), jax.devices(), d_model=64)
    expected = r"(?s)different model config.*attn/out/bias: checkpoint \(2, 32\) vs model \(2, 64\)"
    with pytest.raises(CheckpointError, match=expected):
        Checkpointer(os.path.join(run["workdir"], "checkpoints")).restore(abstract, shardings)
    workdir = tmp_path / "run"
    shutil.copytree(run["workdir"], workdir)
    code = main(["pretrain", "--config", CONFIG, "--workdir", str(workdir),
                 *overrides(run["corpus"], 6, d_model=64)])
    assert code == 2
    assert "written for a different model config" in capsys.readouterr().err


def _limit_file_size():
    # A full disk, as root cannot be refused by permissions: writes past 64 KiB fail with
    # EFBIG instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_a_failed_save_is_reported_and_earlier_checkpoints_stay_usable(run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(run["workdir"], workdir)
    env = {k: v for k, v in os.environ.items()} | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "lmscale.cli", "pretrain", "--config", CONFIG,
         "--workdir", str(workdir), *overrides(run["corpus"], 8)],
        env=env, capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "saving a checkpoint to" in proc.stderr and "File too large" in proc.stderr
    assert "Earlier checkpoints are intact" in proc.stderr
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    assert max(checkpointer.steps()) == 4
    step, _, _ = restore_and_step(run, workdir, (2, 2, 2), jax.devices())
    assert step == 4
