"""Exact resume on data prepared by Beam: `lmscale data prepare --runner beam --workers 2`
first, then a run stopped by SIGTERM and resumed gives bitwise the losses of a run never
interrupted, for GPT and BERT; the runs find the data by its fingerprint and prepare
nothing themselves. (tests/train/test_resume.py does the same on in-process data.)"""

import os
import subprocess
import sys

import pytest
from conftest import logged_losses, one_device_env, stop_with_sigterm, tiny_run_args
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
            *tiny_run_args(STEPS, checkpoint_every=4)]


@pytest.mark.slow  # three training runs per family: ~100 s each family on 2 busy cores
@pytest.mark.parametrize("config", ["gpt2_tiny.py", "bert_tiny.py"])
def test_sigterm_then_resume_on_beam_prepared_data_is_bitwise(
        config, shard_corpus, docstring_tokenizer, tmp_path):
    prepared = tmp_path / "prepared"

    def run(verb: list[str], workdir, *extra: str) -> list[str]:
        return command(verb, config, workdir, shard_corpus, docstring_tokenizer,
                       prepared) + list(extra)

    subprocess.run(run(["data", "prepare"], tmp_path / "prep", "--runner", "beam",
                       "--workers", "2"), env=one_device_env(), check=True, capture_output=True)
    [key] = os.listdir(prepared)
    dataset = sorted(os.listdir(prepared / key / "lmscale_examples" / "1.0.0"))
    assert sum(name.startswith("lmscale_examples-train") for name in dataset) == 4

    reference = tmp_path / "reference"
    done = subprocess.run(run(["pretrain"], reference), env=one_device_env(), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "preparing" not in done.stderr  # found by fingerprint, not prepared again
    expected = logged_losses(reference)
    assert sorted(expected) == list(range(1, STEPS + 1))

    interrupted = tmp_path / "interrupted"
    output = stop_with_sigterm(run(["pretrain"], interrupted), interrupted)
    assert "stopped: preempted" in output
    stopped_at = max(logged_losses(interrupted))
    assert 3 <= stopped_at < STEPS

    resumed = subprocess.run(run(["pretrain"], interrupted), env=one_device_env(),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from step {stopped_at}" in resumed.stderr
    got = logged_losses(interrupted)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(stopped_at + 1, STEPS + 1):
        assert got[step] == expected[step], (step, got[step], expected[step])
    assert os.listdir(prepared) == [key]  # the runs used the Beam-prepared dataset
