"""benchmarks/pretrain_throughput.py: the v4-8 step rate it compares against, and one quick
run of the loader side at tiny shapes."""

import os
import sys

import pytest

from lmscale.cli import _load_config
from lmscale.models import ModelConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import pretrain_throughput  # noqa: E402


def test_gpt2_small_step_rate_on_a_v4_8_from_the_chip_table():
    config = _load_config(os.path.join(ROOT, "configs", "gpt2_small.py"), [])
    model = ModelConfig.from_dict(config.model.to_dict())
    rate, seconds = pretrain_throughput.step_examples_per_sec(model, 512, 1024, "v4-8", 0.5)
    # 6N + 12·L·T·d = 6 x 123,653,376 + 12 x 12 x 1,024 x 768 = 855,166,464 FLOPs per
    # token (N without the position table, PaLM appendix B) x 512 x 1,024 tokens, over
    # 4 chips x 275 TFLOP/s x 50%.
    assert seconds == pytest.approx(855_166_464 * 512 * 1024 / (4 * 275e12 * 0.5))
    assert seconds == pytest.approx(0.815, abs=1e-3)
    assert rate == pytest.approx(512 / seconds)


def test_a_tiny_run_reads_batches_at_each_setting(tmp_path, capsys):
    rows = pretrain_throughput.main([
        "--config", os.path.join(ROOT, "configs", "gpt2_tiny.py"), "--settings", "0:0,1:0,1:1",
        "--batches", "2", "--examples", "64", "--workdir", str(tmp_path),
        "--config.data.seq_len=16", "--config.train.batch_size=8"])
    assert [(r["prefetch_batches"], r["loader_workers"]) for r in rows] == [(0, 0), (1, 0),
                                                                            (1, 1)]
    assert all(r["examples_per_sec"] > 0 for r in rows)
    assert rows[0]["tokens_per_sec"] == pytest.approx(rows[0]["examples_per_sec"] * 16)
    out = capsys.readouterr().out
    assert "step on a v4-8 (chip-table bf16 peak x assumed MFU 50%)" in out
    assert "1 ahead, 1 worker process" in out
