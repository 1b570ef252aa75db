"""A real multi-process run on localhost: 2 processes x 4 fake CPU devices joined by
`jax.distributed` train, checkpoint, are stopped by SIGTERM and resume; their losses match
one process with 8 devices.

SIGTERM goes to one process only: the processes must agree on where to stop, or the one
still training waits forever in a collective for the one that stopped to save."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 20


def pretrain_args(workdir, inputs) -> list[str]:
    return ["pretrain", "--config", os.path.join(REPO, "configs", "gpt2_tiny.py"),
            "--workdir", str(workdir), f"--config.data.sources=['{inputs['corpus']}']",
            f"--config.data.tokenizer={inputs['tokenizer']}", "--config.model.vocab_size=512",
            "--config.model.d_model=64", "--config.model.num_heads=2",
            "--config.model.d_ff=128", "--config.model.num_layers=2",
            "--config.model.max_len=64", "--config.data.seq_len=64",
            "--config.train.batch_size=16", f"--config.train.steps={STEPS}",
            "--config.train.log_every=1", "--config.train.eval_every=0",
            "--config.train.checkpoint_every=4", "--config.train.samples=0",
            "--config.train.peak_flops=1e11", "--config.mesh.data=2", "--config.mesh.fsdp=2",
            "--config.mesh.tensor=2"]


def losses(workdir) -> dict[int, float]:
    lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


@pytest.fixture(scope="module")
def inputs(docstring_corpus, docstring_tokenizer):
    return {"corpus": docstring_corpus, "tokenizer": docstring_tokenizer}


def launch(workdir, inputs) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.Popen(
        [sys.executable, os.path.join(REPO, "launch", "local.py"), "--processes", "2",
         "--devices-per-process", "4", "--", *pretrain_args(workdir, inputs)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def children(launcher: subprocess.Popen) -> dict[int, int]:
    """{process_id: pid} of the launcher's children (Linux /proc)."""
    found = {}
    for pid in open(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read().split():
        cmdline = open(f"/proc/{pid}/cmdline").read().split("\0")
        flag = "--config.distributed.process_id="
        found.update({int(a[len(flag):]): int(pid) for a in cmdline if a.startswith(flag)})
    return found


def finish(launcher: subprocess.Popen, timeout: float = 300) -> str:
    """The launcher's output once it exits; a hang kills every process and fails the test."""
    try:
        return launcher.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        for pid in children(launcher).values():
            os.kill(pid, signal.SIGKILL)
        launcher.kill()
        output = launcher.communicate()[0]
        pytest.fail(f"the processes did not exit within {timeout} s:\n{output[-4000:]}")


def test_two_processes_train_stop_resume_and_match_one_process(inputs, tmp_path):
    workdir = tmp_path / "two"
    proc = launch(workdir, inputs)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 4:
            os.kill(children(proc)[1], signal.SIGTERM)
            break
        time.sleep(0.1)
    output = finish(proc)
    assert proc.returncode == 0, output[-4000:]
    assert "process 0 of 2 reads rows 0::2" in output and "process 1 of 2 reads rows 1::2" in output
    stopped_at = max(losses(workdir))
    assert stopped_at < STEPS, "the run finished before SIGTERM arrived"
    assert str(stopped_at) in os.listdir(workdir / "checkpoints")

    proc = launch(workdir, inputs)
    output = finish(proc)
    assert proc.returncode == 0, output[-4000:]
    assert f"resuming from step {stopped_at}" in output
    two = losses(workdir)
    assert sorted(two) == list(range(1, STEPS + 1))

    single = tmp_path / "one"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    subprocess.run([sys.executable, "-m", "lmscale.cli", *pretrain_args(single, inputs)],
                   env=env, check=True, capture_output=True)
    one = losses(single)
    # Same examples each step; only the row order within the global batch and the
    # reduction order differ, so agreement is to float32 rounding, not bitwise.
    for step in range(1, STEPS + 1):
        assert two[step] == pytest.approx(one[step], rel=1e-4), step
