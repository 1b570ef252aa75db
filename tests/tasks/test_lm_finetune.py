"""`lmscale finetune lm` end to end on a tiny converted GPT-2: padded and packed rows train
through the shared step, the held-out completion loss falls, and the run directory loads
for generation."""

import json
import os

import pytest

from lmscale.cli import main

TINY_GPT2 = os.path.join(os.path.dirname(__file__), "..", "convert", "data", "tiny_gpt2")
WORDS = "abcdefghijklmnop"


def pairs(count: int, offset: int) -> list[dict]:
    """"d e f" -> " g h": the completion continues the alphabet from the prompt."""
    rows = []
    for i in range(count):
        start = (i + offset) % 10
        prompt = " ".join(WORDS[start: start + 3])
        rows.append({"prompt": prompt, "completion": " " + " ".join(WORDS[start + 3: start + 5])})
    return rows


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("packing", [False, True])
def test_completion_loss_falls_and_the_run_generates(packing, tmp_path, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", pairs(64, 0))
    held_out = write_jsonl(tmp_path / "eval.jsonl", pairs(10, 3))  # 10: a partial batch
    workdir = tmp_path / "run"
    code = main(["finetune", "lm", "--config", "configs/lm_finetune_tiny.py",
                 "--workdir", str(workdir), f"--config.init.checkpoint={TINY_GPT2}",
                 f"--config.task.train_data={train}", f"--config.task.eval_data={held_out}",
                 f"--config.task.packing={packing}", "--config.task.seq_len=32",
                 "--config.train.epochs=0", "--config.train.steps=40",
                 "--config.train.batch_size=8", "--config.optimizer.learning_rate=1e-2",
                 "--config.train.peak_flops=1e11", "--config.mesh.data=2",
                 "--config.mesh.fsdp=2", "--config.mesh.tensor=2"])
    assert code == 0, capsys.readouterr().err[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["eval_examples"] == 10
    assert summary["steps"] == 40
    assert summary["train_rows"] < 64 if packing else summary["train_rows"] == 64
    assert summary["completion_loss_after"] < 0.5 * summary["completion_loss_before"]
    assert main(["generate", "--checkpoint", str(workdir), "--prompt", "c d e",
                 "--max-new-tokens", "4"]) == 0
