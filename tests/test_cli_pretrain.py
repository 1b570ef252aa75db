"""`lmscale pretrain` end to end on a tiny model, and its answers to bad input."""

import json
import os

import jax
import numpy as np
import pytest

from lmscale.cli import main
from lmscale.convert.pretrained import load_pretrained
from lmscale.train.checkpoint import Checkpointer
from lmscale.data.tokenizer import TokenizerTrainSpec, train_sentencepiece

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
TINY = ["--config.model.d_model=32", "--config.model.num_heads=2", "--config.model.d_ff=64",
        "--config.model.num_layers=1", "--config.model.vocab_size=512",
        "--config.model.max_len=32", "--config.data.seq_len=32", "--config.train.batch_size=8",
        "--config.train.steps=4", "--config.train.eval_every=2", "--config.train.eval_batches=1",
        "--config.train.log_every=1", "--config.train.checkpoint_every=2",
        "--config.train.samples=1", "--config.train.peak_flops=1e11"]


@pytest.fixture(scope="module")
def corpus(docstring_corpus) -> str:
    return docstring_corpus


def pretrain(config: str, workdir, *extra) -> int:
    return main(["pretrain", "--config", os.path.join(CONFIGS, config), "--workdir", str(workdir),
                 *TINY, *extra])


@pytest.mark.parametrize("config", ["gpt2_tiny.py", "bert_tiny.py"])
def test_pretrain_writes_a_complete_run_directory(config, corpus, tmp_path, capsys):
    workdir = tmp_path / "run"
    assert pretrain(config, workdir, f"--config.data.sources=['{corpus}']") == 0
    assert json.loads((workdir / "config.json").read_text())["train"]["steps"] == 4
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for key in ("loss", "learning_rate", "tokens_per_sec", "mfu", "grad_norm"):
        assert all(key in r for r in steps), key
    assert any("eval_loss" in r for r in records)
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir))
    assert (workdir / "loss.png").stat().st_size > 0
    assert "4" in os.listdir(workdir / "checkpoints")
    assert (workdir / "tokenizer" / "spm.model").exists()
    out = capsys.readouterr().out
    assert "held-out loss" in out and "---" in out  # a sample or fill-mask line

    # A parameters-only export holds exactly the final parameters, and loads for fine-tuning.
    export = tmp_path / "export"
    assert main(["export", "--workdir", str(workdir), "--out", str(export)]) == 0
    exported = load_pretrained(str(export))
    final = Checkpointer(str(workdir / "checkpoints")).restore_params()
    for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(exported.params)):
        np.testing.assert_array_equal(a, b)
    assert exported.config.d_model == 32 and exported.tokenizer.vocab_size == 512


def test_bad_input_exits_2_with_a_clear_message(corpus, tmp_path, capsys):
    def fails(*args, match: str, config="gpt2_tiny.py"):
        workdir = tmp_path / f"bad{len(os.listdir(tmp_path))}"
        assert pretrain(config, workdir, *args) == 2
        assert match in capsys.readouterr().err
        # Nothing written that could pass for a run.
        assert not (workdir / "config.json").exists()
        assert not (workdir / "checkpoints").exists()

    source = f"--config.data.sources=['{corpus}']"
    fails(source, "--config.train.stpes=3", match="did you mean 'train.steps'")
    fails("--config.data.sources=['/no/such/dir/*.txt']", match="no file matches")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    fails(f"--config.data.sources=['{empty}']", match="is empty")
    fails(source, "--config.mesh.data=3", match="needs 3 devices but 8 are available")
    fails(source, "--config.mesh.data=3", "--config.mesh.fsdp=-1", match="do not divide the 8")
    fails(source, "--config.train.batch_size=12", match="divide over the 8 data-parallel")
    tok = train_sentencepiece(TokenizerTrainSpec(inputs=(corpus,), vocab_size=400),
                              str(tmp_path / "tok" / "spm"))
    fails(source, f"--config.data.tokenizer={tok}",
          match="the tokenizer has 400 tokens but model.vocab_size is 512")


def test_a_loss_that_turns_nan_stops_the_run(corpus, tmp_path, capsys):
    workdir = tmp_path / "nan"
    code = pretrain("gpt2_tiny.py", workdir, f"--config.data.sources=['{corpus}']",
                    "--config.optimizer.learning_rate=1e30", "--config.optimizer.warmup_steps=0",
                    "--config.train.checkpoint_every=0", "--config.optimizer.clip_norm=0")
    err = capsys.readouterr().err
    assert code == 2
    assert "the loss became nan at step" in err and "last good state" in err
    # The good state was checkpointed, not the NaN one.
    assert os.listdir(workdir / "checkpoints")


def test_profile_trace_and_compilation_cache(corpus, tmp_path, capsys):
    """`train.profile_steps` writes a jax.profiler trace of those steps into the run
    directory; `train.compilation_cache_dir` fills JAX's persistent cache."""
    workdir, cache = tmp_path / "run", tmp_path / "cache"
    assert pretrain("gpt2_tiny.py", workdir, f"--config.data.sources=['{corpus}']",
                    "--config.train.profile_steps=[1, 3]",
                    f"--config.train.compilation_cache_dir={cache}") == 0
    traces = list((workdir / "profile").rglob("*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0
    assert any(cache.iterdir())
    assert pretrain("gpt2_tiny.py", tmp_path / "bad", f"--config.data.sources=['{corpus}']",
                    "--config.train.profile_steps=[3, 1]") == 2
    assert "profile_steps must be [first, last)" in capsys.readouterr().err


def test_weighted_sources_train_on_their_mixture(corpus, docstring_tokenizer, tmp_path):
    """`data.sources` as SOURCE@WEIGHT: each source is prepared on its own and every batch
    holds each source's share (the loader's own test checks 0.8/0.2 over 1,000 batches)."""
    text = open(corpus, encoding="utf-8").read().split("\n\n")
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("\n\n".join(text[: len(text) // 2]))
    second.write_text("\n\n".join(text[len(text) // 2:]))
    workdir = tmp_path / "run"
    assert pretrain("gpt2_tiny.py", workdir, f"--config.data.tokenizer={docstring_tokenizer}",
                    f"--config.data.sources=['{first}@3', '{second}@1']",
                    "--config.train.samples=0") == 0
    summary = json.loads((workdir / "summary.json").read_text())
    (epoch,) = summary["mixture"]  # 4 steps of 8 rows: within the first epoch
    assert epoch["drawn"] == [24, 8]  # 3:1, exactly, batch by batch
    assert len(os.listdir(workdir / "data")) == 2  # prepared per source
    metrics = (workdir / "metrics.jsonl").read_text()
    assert len([line for line in metrics.splitlines() if '"loss"' in line]) == 4
