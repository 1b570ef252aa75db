"""Exact resume on data prepared by Beam: `lmscale data prepare --runner beam --workers 2`
first, then a run stopped by SIGTERM and resumed gives bitwise the losses of a run never
interrupted, for GPT and BERT; the runs find the data by its fingerprint and prepare
nothing themselves. (tests/train/test_resume.py does the same on in-process data.)"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from shard_corpus import write_shard_corpus

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 16


@pytest.fixture(scope="module")
def shard_corpus(tmp_path_factory) -> str:
    return write_shard_corpus(tmp_path_factory.mktemp("shard_corpus"))


def command(verb: list[str], config: str, workdir, corpus: str, tokenizer: str,
            prepared) -> list[str]:
    return [sys.executable, "-m", "lmscale.cli", *verb,
            "--config", os.path.join(REPO, "configs", config), "--workdir", str(workdir),
            f"--config.data.sources=['{corpus}']", "--config.data.document_split=blank_line",
            "--config.data.shard_mb=1e-9", f"--config.data.tokenizer={tokenizer}",
            f"--config.data.prepared_dir={prepared}",
            "--config.model.vocab_size=512", "--config.model.d_model=64",
            "--config.model.num_heads=2", "--config.model.d_ff=256",
            "--config.model.max_len=64", "--config.data.seq_len=64",
            "--config.model.dropout=0.1",  # dropout on: its randomness must resume too
            "--config.train.batch_size=16", f"--config.train.steps={STEPS}",
            "--config.train.log_every=1", "--config.train.eval_every=0",
            "--config.train.checkpoint_every=4", "--config.train.samples=0",
            "--config.train.peak_flops=1e11", "--config.optimizer.warmup_steps=5"]


def losses(workdir) -> dict[int, float]:
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def env() -> dict:
    # One CPU device per process keeps the subprocesses light.
    return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"PYTHONUNBUFFERED": "1"}


@pytest.mark.slow  # three training runs per family: ~100 s each family on 2 busy cores
@pytest.mark.parametrize("config", ["gpt2_tiny.py", "bert_tiny.py"])
def test_sigterm_then_resume_on_beam_prepared_data_is_bitwise(
        config, shard_corpus, docstring_tokenizer, tmp_path):
    prepared = tmp_path / "prepared"

    def run(verb: list[str], workdir, *extra: str) -> list[str]:
        return command(verb, config, workdir, shard_corpus, docstring_tokenizer,
                       prepared) + list(extra)

    subprocess.run(run(["data", "prepare"], tmp_path / "prep", "--runner", "beam",
                       "--workers", "2"), env=env(), check=True, capture_output=True)
    [key] = os.listdir(prepared)
    dataset = sorted(os.listdir(prepared / key / "lmscale_examples" / "1.0.0"))
    assert sum(name.startswith("lmscale_examples-train") for name in dataset) == 4

    reference = tmp_path / "reference"
    done = subprocess.run(run(["pretrain"], reference), env=env(), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "preparing" not in done.stderr  # found by fingerprint, not prepared again
    expected = losses(reference)
    assert sorted(expected) == list(range(1, STEPS + 1))

    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(run(["pretrain"], interrupted), env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = interrupted / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    assert "stopped: preempted" in output
    stopped_at = max(losses(interrupted))
    assert 3 <= stopped_at < STEPS

    resumed = subprocess.run(run(["pretrain"], interrupted), env=env(), capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from step {stopped_at}" in resumed.stderr
    got = losses(interrupted)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(stopped_at + 1, STEPS + 1):
        assert got[step] == expected[step], (step, got[step], expected[step])
    assert os.listdir(prepared) == [key]  # the runs used the Beam-prepared dataset
