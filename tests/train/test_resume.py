"""Preemption and exact resume, in real subprocesses: SIGTERM finishes the step, saves and
exits 0; the resumed run gives bitwise the same losses as a run never interrupted."""

import os
import subprocess
import sys

import pytest
from conftest import logged_losses, one_device_env, stop_with_sigterm, tiny_run_args


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
            *tiny_run_args(STEPS, checkpoint_every=10)]


# BERT's ~65 s run is in `pytest -m slow` (with BERT on Beam-prepared data); GPT stays here.
@pytest.mark.parametrize("config", ["gpt2_tiny.py",
                                    pytest.param("bert_tiny.py", marks=pytest.mark.slow)])
def test_sigterm_then_resume_matches_an_uninterrupted_run(config, shared_inputs, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(command(config, reference, shared_inputs), env=one_device_env(), check=True,
                   capture_output=True)
    expected = logged_losses(reference)
    assert sorted(expected) == list(range(1, STEPS + 1))

    interrupted = tmp_path / "interrupted"
    output = stop_with_sigterm(command(config, interrupted, shared_inputs), interrupted)
    assert "SIGTERM received" in output and "stopped: preempted" in output
    stopped_at = max(logged_losses(interrupted))
    assert 3 <= stopped_at < STEPS
    assert str(stopped_at) in os.listdir(interrupted / "checkpoints")

    resumed = subprocess.run(command(config, interrupted, shared_inputs), env=one_device_env(),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from step {stopped_at}" in resumed.stderr
    got = logged_losses(interrupted)
    assert sorted(got) == list(range(1, STEPS + 1))
    # Bitwise: same data order (batches are indexed by step), same dropout keys (folded
    # from the step), same compiled program.
    for step in range(stopped_at + 1, STEPS + 1):
        assert got[step] == expected[step], (step, got[step], expected[step])
