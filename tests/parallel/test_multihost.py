"""A real multi-process run on localhost: 2 processes x 4 fake CPU devices joined by
`jax.distributed` train, checkpoint, are stopped by SIGTERM and resume; their losses match
one process with 8 devices, and end with samples from parameters FSDP-sharded across
both. A shorter run puts the tensor axis across the two processes.

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


def pretrain_args(workdir, inputs, **overrides) -> list[str]:
    """`overrides`: config keys under `--config.` (e.g. `mesh__tensor=8` for mesh.tensor)."""
    settings = {
        "model.vocab_size": 512, "model.d_model": 64, "model.num_heads": 2, "model.d_ff": 128,
        "model.num_layers": 2, "model.max_len": 64, "data.seq_len": 64,
        "train.batch_size": 16, "train.steps": STEPS, "train.log_every": 1,
        "train.eval_every": 0, "train.checkpoint_every": 4, "train.samples": 0,
        "train.peak_flops": 1e11, "mesh.data": 1, "mesh.fsdp": 4, "mesh.tensor": 2,
    } | {k.replace("__", "."): v for k, v in overrides.items()}
    return ["pretrain", "--config", os.path.join(REPO, "configs", "gpt2_tiny.py"),
            "--workdir", str(workdir), f"--config.data.sources=['{inputs['corpus']}']",
            f"--config.data.tokenizer={inputs['tokenizer']}",
            *(f"--config.{k}={v}" for k, v in settings.items())]


def losses(workdir) -> dict[int, float]:
    lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


@pytest.fixture(scope="module")
def inputs(docstring_corpus, docstring_tokenizer):
    return {"corpus": docstring_corpus, "tokenizer": docstring_tokenizer}


def launch(workdir, inputs, **overrides) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.Popen(
        [sys.executable, os.path.join(REPO, "launch", "local.py"), "--processes", "2",
         "--devices-per-process", "4", "--", *pretrain_args(workdir, inputs, **overrides)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_one_process(workdir, inputs, **overrides) -> None:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    subprocess.run([sys.executable, "-m", "lmscale.cli",
                    *pretrain_args(workdir, inputs, **overrides)],
                   env=env, check=True, capture_output=True)


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
    # fsdp = 4 shards of 4 rows; each process's devices hold two of them.
    assert "process 0 of 2 reads rows 0:8 " in output
    assert "process 1 of 2 reads rows 8:16 " in output
    stopped_at = max(losses(workdir))
    assert stopped_at < STEPS, "the run finished before SIGTERM arrived"
    assert str(stopped_at) in os.listdir(workdir / "checkpoints")

    # The FSDP axis spans both processes, so no process holds a whole parameter: the
    # end-of-run samples need them gathered.
    proc = launch(workdir, inputs, train__samples=2)
    output = finish(proc)
    assert proc.returncode == 0, output[-4000:]
    assert f"resuming from step {stopped_at}" in output
    two = losses(workdir)
    assert sorted(two) == list(range(1, STEPS + 1))
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["stopped"] == "done" and len(summary["samples"]) == 2
    assert all(summary["samples"])

    single = tmp_path / "one"
    run_one_process(single, inputs)
    one = losses(single)
    # Same rows in the same places each step; only the reduction order across processes
    # may differ, so agreement is to float32 rounding, not bitwise.
    for step in range(1, STEPS + 1):
        assert two[step] == pytest.approx(one[step], rel=1e-5), step


@pytest.mark.slow  # ~50 s; the 2-process FSDP stop/resume test stays in the default run
def test_tensor_axis_spanning_both_processes_reads_whole_batches_and_matches(inputs, tmp_path):
    """mesh.tensor = 8 over 2 hosts: the batch is not split at all, so both processes must
    load every row of each global batch (loading half each would feed the replicas
    different rows)."""
    mesh = {"mesh__data": 1, "mesh__fsdp": 1, "mesh__tensor": 8, "model__num_heads": 8,
            "train__steps": 6, "train__checkpoint_every": 0}
    two_dir = tmp_path / "two"
    proc = launch(two_dir, inputs, **mesh)
    output = finish(proc)
    assert proc.returncode == 0, output[-4000:]
    assert "process 0 of 2 reads rows 0:16 " in output
    assert "process 1 of 2 reads rows 0:16 " in output
    run_one_process(tmp_path / "one", inputs, **mesh)
    two, one = losses(two_dir), losses(tmp_path / "one")
    assert sorted(two) == sorted(one) == list(range(1, 7))
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5), step
