"""`squad_timing.py --target`: the SQuAD recipe compiled for a TPU topology becomes a
2-epoch estimate (here a shrunken BERT so the compile is quick; the README's figure is
BERT-Large's)."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import squad_stats  # noqa: E402
import squad_timing  # noqa: E402

pytest.importorskip("libtpu", reason="compiling for TPU topologies needs libtpu "
                    "(pip install -e '.[test]' installs it)")


def test_target_estimate_turns_the_compiled_step_into_two_epochs(capsys):
    small = ["--config.model.num_layers=1", "--config.model.d_model=128",
             "--config.model.num_heads=2", "--config.model.d_ff=256",
             "--config.train.batch_size=32"]
    code = squad_timing.main(["--config", os.path.join(ROOT, "configs", "squad_bert_large.py"),
                              "--target", "v5e-4", *small])
    assert code == 0
    out = capsys.readouterr().out
    report = json.loads(out[:out.index("\n}\n") + 2])
    assert report["max_seq_length"] == 384 and report["epochs"] == 2
    assert report["steps"] == -(-2 * squad_stats.TRAIN_WINDOWS // 32)
    assert report["fits"] and report["step_seconds_estimate"] > 0
    assert report["minutes_estimate"] == pytest.approx(
        report["steps"] * report["step_seconds_estimate"] / 60)
    assert report["minutes_if_compute_bound"] <= report["minutes_estimate"]
    assert "about 30 min on a single Cloud TPU" in out
