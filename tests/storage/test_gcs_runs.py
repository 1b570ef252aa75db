"""gs:// run directories against a real GCS API server (tests/storage/conftest.py): the
storage layer, Orbax checkpoints that survive a truncated object, a tiny GPT stopped by
SIGTERM and resumed bit for bit, and export + classification fine-tuning from and to
gs://."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

from lmscale import storage
from lmscale.cli import main
from lmscale.train.checkpoint import Checkpointer
from lmscale.train.state import TrainState

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 30


def test_storage_round_trips_files_globs_and_trees(gcs_dir, tmp_path):
    storage.write_text(storage.join(gcs_dir, "a", "x1.txt"), "one")
    storage.write_json(storage.join(gcs_dir, "a", "x2.json"), {"k": 2})
    storage.write_bytes(storage.join(gcs_dir, "b", "y.bin"), b"\0\1")
    assert storage.read_text(storage.join(gcs_dir, "a", "x1.txt")) == "one"
    assert storage.read_json(storage.join(gcs_dir, "a", "x2.json")) == {"k": 2}
    assert storage.glob(f"{gcs_dir}/a/x*") == [f"{gcs_dir}/a/x1.txt", f"{gcs_dir}/a/x2.json"]
    assert storage.glob(f"{gcs_dir}/nothing*") == []
    assert list(storage.files_under(gcs_dir)) == ["a/x1.txt", "a/x2.json", "b/y.bin"]
    assert storage.size(storage.join(gcs_dir, "b", "y.bin")) == 2
    local = storage.local_copy(gcs_dir)
    assert open(os.path.join(local, "b", "y.bin"), "rb").read() == b"\0\1"
    storage.copy_tree(local, storage.join(gcs_dir, "copy"))
    assert storage.read_text(storage.join(gcs_dir, "copy", "a", "x1.txt")) == "one"
    with pytest.raises(Exception, match="cannot read"):
        storage.read_text(storage.join(gcs_dir, "missing.txt"))


def _state(step: int) -> TrainState:
    return TrainState(step=jnp.asarray(step, jnp.int32),
                      params={"w": jnp.arange(64, dtype=jnp.float32) * step},
                      opt_state=(jnp.zeros(3),))


def test_checkpoints_on_gcs_skip_a_truncated_object_and_an_uncommitted_step(gcs_dir, caplog):
    directory = storage.join(gcs_dir, "checkpoints")
    checkpointer = Checkpointer(directory, keep=5)
    for step in (10, 20):
        checkpointer.save(_state(step), {"step": step}, force=True)
    checkpointer.close()
    step_dir = storage.as_path(directory) / "20"
    # Orbax on an object store marks a finished step with commit_success.txt, written last.
    assert (step_dir / "commit_success.txt").exists()
    # Cut one stored array object of step 20 in half.
    data = [name for name in storage.files_under(step_dir / "state")
            if "/d/" in f"/{name}" and not name.endswith(".json")]
    assert data, list(storage.files_under(step_dir / "state"))
    victim = step_dir / "state" / data[0]
    storage.write_bytes(victim, storage.read_bytes(victim)[: storage.size(victim) // 2])
    # And a step whose save never finished: files, no commit marker.
    (storage.as_path(directory) / "30" / "state").mkdir(parents=True, exist_ok=True)
    storage.write_text(storage.as_path(directory) / "30" / "state" / "partial", "x")

    abstract = _state(0)
    shardings = TrainState(step=None, params={"w": None}, opt_state=(None,))
    reader = Checkpointer(directory)
    assert reader.steps() == [10, 20]  # step 30 is not a checkpoint
    with caplog.at_level(logging.WARNING, logger="lmscale.train.checkpoint"):
        restored = reader.restore(abstract, shardings)
    reader.close()
    assert int(restored.step) == 10
    np.testing.assert_array_equal(restored.params["w"], np.arange(64) * 10)
    assert "step 20" in caplog.text and "trying an older one" in caplog.text


def _pretrain(workdir: str, corpus: str, tokenizer: str, prepared: str | None) -> list[str]:
    args = [sys.executable, "-m", "lmscale.cli", "pretrain",
            "--config", os.path.join(REPO, "configs", "gpt2_tiny.py"), "--workdir", workdir,
            f"--config.data.sources=['{corpus}']", f"--config.data.tokenizer={tokenizer}",
            "--config.model.vocab_size=512", "--config.model.d_model=64",
            "--config.model.num_heads=2", "--config.model.d_ff=256",
            "--config.model.max_len=64", "--config.data.seq_len=64",
            "--config.model.dropout=0.1", "--config.train.batch_size=16",
            f"--config.train.steps={STEPS}", "--config.train.log_every=1",
            "--config.train.eval_every=0", "--config.train.checkpoint_every=10",
            "--config.train.samples=0", "--config.train.peak_flops=1e11",
            "--config.optimizer.warmup_steps=5"]
    return args + ([f"--config.data.prepared_dir={prepared}"] if prepared else [])


def _losses(metrics_text: str) -> dict[int, float]:
    records = [json.loads(line) for line in metrics_text.splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


@pytest.mark.slow  # ~85 s: three runs; the gs:// export/fine-tune test stays in the default run
def test_gpt_on_gcs_stopped_by_sigterm_resumes_bit_for_bit(
        docstring_corpus, docstring_tokenizer, gcs_dir, run_env, tmp_path):
    """Corpus and tokenizer in the bucket, the run directory (checkpoints, metrics, prepared
    examples) in the bucket; the losses equal a local run's that was never interrupted."""
    corpus, tokenizer = storage.join(gcs_dir, "corpus.txt"), storage.join(gcs_dir, "spm.model")
    storage.copy_file(docstring_corpus, corpus)
    storage.copy_file(docstring_tokenizer, tokenizer)
    reference = tmp_path / "reference"
    subprocess.run(_pretrain(str(reference), docstring_corpus, docstring_tokenizer,
                             str(tmp_path / "prepared")),
                   env=run_env, check=True, capture_output=True)
    expected = _losses((reference / "metrics.jsonl").read_text())
    assert sorted(expected) == list(range(1, STEPS + 1))

    workdir = storage.join(gcs_dir, "run")
    metrics = storage.join(workdir, "metrics.jsonl")
    log_file = tmp_path / "interrupted.log"  # a file, not a pipe nobody reads while polling
    with open(log_file, "w") as log:
        proc = subprocess.Popen(_pretrain(workdir, corpus, tokenizer, None), env=run_env,
                                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if storage.exists(metrics) and len(storage.read_text(metrics).splitlines()) >= 12:
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.2)
        proc.wait(timeout=300)
    output = log_file.read_text()
    assert proc.returncode == 0, output[-3000:]
    assert "stopped: preempted" in output
    stopped_at = max(_losses(storage.read_text(metrics)))
    assert 12 <= stopped_at < STEPS
    checkpoints = storage.as_path(workdir) / "checkpoints"
    assert str(stopped_at) in [p.name for p in checkpoints.iterdir()]
    # The prepared examples went to the bucket, complete (TFDS's dataset_info.json last).
    assert storage.glob(f"{workdir}/data/*/lmscale_examples/1.0.0/dataset_info.json")

    resumed = subprocess.run(_pretrain(workdir, corpus, tokenizer, None), env=run_env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from step {stopped_at}" in resumed.stderr
    lines = [json.loads(line) for line in storage.read_text(metrics).splitlines()]
    train_steps = [r["step"] for r in lines if "loss" in r]
    assert train_steps == list(range(1, STEPS + 1))  # every step once: no lost, no repeated
    got = _losses(storage.read_text(metrics))
    for step in range(1, STEPS + 1):
        assert got[step] == expected[step], (step, got[step], expected[step])
    summary = storage.read_json(storage.join(workdir, "summary.json"))
    assert summary["stopped"] == "done" and summary["step"] == STEPS
    assert storage.isfile(storage.join(workdir, "loss.png"))
    assert storage.glob(f"{workdir}/events.out.tfevents.*")  # TensorBoard, in the bucket

    # The run directory in the bucket is a checkpoint for evaluation and export.
    text = storage.join(gcs_dir, "held.txt")
    storage.write_text(text, "The module provides functions for working with paths. " * 20)
    assert main(["eval", "perplexity", "--checkpoint", workdir, "--text", text]) == 0
    assert storage.read_json(storage.join(workdir, "eval", "perplexity_held.json"))["tokens"]
    assert main(["export", "--workdir", workdir, "--out", storage.join(gcs_dir, "gpt")]) == 0
    assert storage.isfile(storage.join(gcs_dir, "gpt", "spm.model"))


def test_export_and_classification_fine_tuning_from_and_to_gcs(tiny_hf_bert, gcs_dir,
                                                                tmp_path):
    hf_copy = storage.join(gcs_dir, "hf")
    storage.copy_tree(tiny_hf_bert, hf_copy)
    converted = storage.join(gcs_dir, "converted")
    assert main(["convert", "hf", "--model-dir", hf_copy, "--out", converted]) == 0
    exported = storage.join(gcs_dir, "export")
    assert main(["export", "--workdir", converted, "--out", exported]) == 0
    assert storage.isfile(storage.join(exported, "model_config.json"))

    rows = ["sentence\tlabel"] + ["a good fun movie\t1", "an awful boring film\t0"] * 8
    storage.write_text(storage.join(gcs_dir, "train.tsv"), "\n".join(rows) + "\n")
    storage.write_text(storage.join(gcs_dir, "dev.jsonl"),
                       '{"sentence": "loved the acting", "label": 1}\n'
                       '{"sentence": "hated it", "label": 0}\n')
    workdir = storage.join(gcs_dir, "classify")
    code = main(["finetune", "classify", "--config", os.path.join(REPO, "configs",
                                                                 "classify_minilm.py"),
                 "--workdir", workdir, f"--config.init.checkpoint={exported}",
                 f"--config.task.train_data={gcs_dir}/train.tsv",
                 f"--config.task.eval_data={gcs_dir}/dev.jsonl",
                 "--config.task.max_seq_length=16", "--config.train.epochs=0.0",
                 "--config.train.steps=3", "--config.train.batch_size=8",
                 "--config.train.log_every=1", "--config.train.peak_flops=1e12",
                 "--config.task.predict_batch_size=8"])
    assert code == 0
    scores = storage.read_json(storage.join(workdir, "eval.json"))
    assert scores["examples"] == 2 and {"accuracy", "f1"} <= set(scores)
    assert len(storage.read_json(storage.join(workdir, "predictions.json"))) == 2
    assert storage.glob(f"{workdir}/checkpoints/3/commit_success.txt")
    # The fine-tuned run directory is itself a checkpoint to export and convert, on gs://.
    assert main(["export", "--workdir", workdir, "--out", storage.join(gcs_dir, "ft")]) == 0
    assert main(["convert", "to-hf", "--checkpoint", storage.join(gcs_dir, "ft"),
                 "--out", storage.join(gcs_dir, "ft-hf")]) == 0
    assert storage.isfile(storage.join(gcs_dir, "ft-hf", "model.safetensors"))
