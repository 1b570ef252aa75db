"""Preemption and exact resume, in real subprocesses: SIGTERM finishes the step, saves and
exits 0; the resumed run gives bitwise the same losses as a run never interrupted."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 30


@pytest.fixture(scope="module")
def shared_inputs(docstring_corpus, docstring_tokenizer, tmp_path_factory):
    """A corpus, a tokenizer and a prepared-data folder shared by the runs of a family."""
    return {"corpus": docstring_corpus, "tokenizer": docstring_tokenizer,
            "prepared": str(tmp_path_factory.mktemp("resume") / "prepared")}


def command(config: str, workdir, inputs) -> list[str]:
    return [sys.executable, "-m", "lmscale.cli", "pretrain",
            "--config", os.path.join(REPO, "configs", config), "--workdir", str(workdir),
            f"--config.data.sources=['{inputs['corpus']}']",
            f"--config.data.tokenizer={inputs['tokenizer']}",
            f"--config.data.prepared_dir={inputs['prepared']}",
            "--config.model.vocab_size=512", "--config.model.d_model=64",
            "--config.model.num_heads=2", "--config.model.d_ff=256",
            "--config.model.max_len=64", "--config.data.seq_len=64",
            "--config.model.dropout=0.1",  # dropout on: its randomness must resume too
            "--config.train.batch_size=16", f"--config.train.steps={STEPS}",
            "--config.train.log_every=1", "--config.train.eval_every=0",
            "--config.train.checkpoint_every=10", "--config.train.samples=0",
            "--config.train.peak_flops=1e11", "--config.optimizer.warmup_steps=5"]


def losses(workdir) -> dict[int, float]:
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def env() -> dict:
    # One CPU device per process keeps the subprocesses light.
    return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"PYTHONUNBUFFERED": "1"}


# BERT's ~65 s run is in `pytest -m slow` (with BERT on Beam-prepared data); GPT stays here.
@pytest.mark.parametrize("config", ["gpt2_tiny.py",
                                    pytest.param("bert_tiny.py", marks=pytest.mark.slow)])
def test_sigterm_then_resume_matches_an_uninterrupted_run(config, shared_inputs, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(command(config, reference, shared_inputs), env=env(), check=True,
                   capture_output=True)
    expected = losses(reference)
    assert sorted(expected) == list(range(1, STEPS + 1))

    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(command(config, interrupted, shared_inputs), env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = interrupted / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert "SIGTERM received" in output and "stopped: preempted" in output
    stopped_at = max(losses(interrupted))
    assert 3 <= stopped_at < STEPS
    assert str(stopped_at) in os.listdir(interrupted / "checkpoints")

    resumed = subprocess.run(command(config, interrupted, shared_inputs), env=env(),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from step {stopped_at}" in resumed.stderr
    got = losses(interrupted)
    assert sorted(got) == list(range(1, STEPS + 1))
    # Bitwise: same data order (batches are indexed by step), same dropout keys (folded
    # from the step), same compiled program.
    for step in range(stopped_at + 1, STEPS + 1):
        assert got[step] == expected[step], (step, got[step], expected[step])
