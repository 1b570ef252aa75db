"""The accelerator suite's code paths at CPU sizes (the real run needs a GPU or TPU host:
docs/accelerator/ holds one), and its SQuAD workload against the config it stands for."""

import json
import os
import subprocess
import sys

import pytest

from lmscale.config import load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUITE = os.path.join(ROOT, "benchmarks", "accelerator_suite.py")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import accelerator_suite  # noqa: E402


def test_squad_workload_is_the_bert_large_config():
    config = load_config_file(os.path.join(ROOT, "configs", "squad_bert_large.py"))
    preset_name, batch, seq = accelerator_suite.WORKLOADS["squad-bert-large"]
    assert preset_name == config.model.preset
    assert (batch, seq) == (config.train.batch_size, config.task.max_seq_length)
    assert config.task.doc_stride == 128 and config.train.epochs == accelerator_suite.SQUAD_EPOCHS


@pytest.mark.slow  # a benchmark smoke run (~30 s)
def test_quick_suite_measures_and_reports(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, SUITE, "lmscale", "--quick", "--steps", "2",
                          "--out", str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads((tmp_path / "lmscale.json").read_text())
    assert [r["workload"] for r in rows] == ["gpt2-small", "squad-bert-large"]
    for r in rows:
        assert r["step_ms"] > 0 and 0 < r["mfu"] < 1
        assert r["tokens_per_sec"] == pytest.approx(r["batch"] * r["seq"] / r["step_ms"] * 1e3)
    table = accelerator_suite.report(str(tmp_path))
    assert "| gpt2-small | lmscale (auto attention) | 8 x 64 |" in table
    minutes = 2 * accelerator_suite.SQUAD_TRAIN_WINDOWS / rows[1]["examples_per_sec"] / 60
    assert f"lmscale (auto attention): {minutes:.1f} min" in table
