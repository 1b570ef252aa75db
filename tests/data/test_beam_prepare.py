"""`lmscale data prepare --runner beam`: Beam's FnApiRunner with 2 worker processes writes
the in-process path's dataset file for file; bad input stops it by name, or is skipped and
counted when the config says so, and never leaves a dataset that could be used."""

import filecmp
import json
import os

import numpy as np
import pytest

from lmscale.cli import main
from lmscale.data.beam_prepare import BeamSettings, check_settings
from lmscale.data.prepared import METADATA, VERSION_DIR, open_examples
from lmscale.errors import ConfigError
from shard_corpus import write_shard_corpus

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def shard_corpus(tmp_path_factory) -> str:
    return write_shard_corpus(tmp_path_factory.mktemp("shard_corpus"))


def prepare(config: str, workdir, corpus: str, tokenizer: str, prepared, *flags) -> int:
    return main(["data", "prepare", "--config", os.path.join(REPO, "configs", config),
                 "--workdir", str(workdir), f"--config.data.sources=['{corpus}']",
                 "--config.data.document_split=blank_line", "--config.data.shard_mb=1e-9",
                 f"--config.data.tokenizer={tokenizer}", "--config.model.vocab_size=512",
                 f"--config.data.prepared_dir={prepared}", *flags])


def the_dataset(prepared) -> str:
    [key] = os.listdir(prepared)
    return os.path.join(prepared, key)


@pytest.mark.parametrize("config", ["gpt2_tiny.py", "bert_tiny.py"])
def test_beam_with_two_workers_writes_the_in_process_dataset(
        config, shard_corpus, docstring_tokenizer, tmp_path):
    ours = prepare(config, tmp_path, shard_corpus, docstring_tokenizer, tmp_path / "in_process")
    beam = prepare(config, tmp_path, shard_corpus, docstring_tokenizer, tmp_path / "beam",
                   "--runner", "beam", "--workers", "2")
    assert ours == beam == 0
    a, b = the_dataset(tmp_path / "in_process"), the_dataset(tmp_path / "beam")
    assert os.path.basename(a) == os.path.basename(b)  # the runner is not in the fingerprint
    files = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    train_files = os.path.join(VERSION_DIR, "lmscale_examples-train")
    assert sum(f.startswith(train_files) for f in files) == 4
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert mismatch == errors == []  # shard files, TFDS metadata, stats, metadata.json
    # ... so every example is the same, by index.
    (sources_a, meta), (sources_b, _) = open_examples(*os.path.split(a)), open_examples(
        *os.path.split(b))
    assert meta["shards"] == 4 and meta["examples"]["held_out"] > 0
    for split in ("train", "held_out"):
        assert len(sources_a[split]) == len(sources_b[split]) == meta["examples"][split]
        for i in range(0, len(sources_a[split]), 7):
            x, y = sources_a[split][i], sources_b[split][i]
            assert all(np.array_equal(x[k], y[k]) for k in x)


def test_a_bad_shard_stops_beam_by_name_and_is_skipped_only_when_configured(
        shard_corpus, docstring_tokenizer, tmp_path, capsys, caplog):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in sorted(os.listdir(os.path.dirname(shard_corpus))):
        os.symlink(os.path.join(os.path.dirname(shard_corpus), path), corpus / path)
    (corpus / "part1b.txt").write_bytes("na\u00efve".encode("utf-8")[:3])  # cut mid-\u00ef
    glob = str(corpus / "*.txt")
    prepared = tmp_path / "prepared"
    beam = ("--runner", "beam", "--workers", "2")
    assert prepare("gpt2_tiny.py", tmp_path, glob, docstring_tokenizer, prepared, *beam) == 2
    err = capsys.readouterr().err
    assert "part1b.txt' is truncated inside a UTF-8 sequence at byte 2 of 3" in err
    assert "skip_bad_shards" in err
    # Nothing that could pass for a dataset: no metadata, no TFDS folder, no leftovers.
    [key] = os.listdir(prepared)
    assert not os.path.exists(os.path.join(prepared, key, METADATA))
    assert os.listdir(os.path.join(prepared, key, "lmscale_examples")) == []

    assert prepare("gpt2_tiny.py", tmp_path, glob, docstring_tokenizer, prepared, *beam,
                   "--config.data.skip_bad_shards=True") == 0
    dataset = the_dataset_with(prepared, METADATA)
    with open(os.path.join(dataset, METADATA)) as f:
        metadata = json.load(f)
    assert [os.path.basename(s["source"]) for s in metadata["skipped_sources"]] == ["part1b.txt"]
    assert metadata["shards"] == 5 and metadata["examples"]["train"] > 0
    assert "prepared without bad source shard" in caplog.text and "part1b.txt" in caplog.text
    assert "1 source shard(s) skipped" in caplog.text


def the_dataset_with(prepared, name: str) -> str:
    [dataset] = [os.path.join(prepared, k) for k in os.listdir(prepared)
                 if os.path.exists(os.path.join(prepared, k, name))]
    return dataset


def test_dry_run_plans_shards_and_checks_runner_options(shard_corpus, docstring_tokenizer,
                                                        tmp_path, capsys):
    assert prepare("gpt2_tiny.py", tmp_path, shard_corpus, docstring_tokenizer,
                   tmp_path / "p", "--runner", "beam", "--workers", "2", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "4 shard(s)" in out and "4 file(s)" in out
    assert "FnApiRunner, multi_processing with 2 worker process(es)" in out
    assert not (tmp_path / "p").exists()
    assert prepare("gpt2_tiny.py", tmp_path, shard_corpus, docstring_tokenizer,
                   tmp_path / "p", "--runner", "beam", "--dry-run",
                   "--beam-options=--runner=DataflowRunner --project=p --region=r") == 2
    assert "temp_location" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"unknown Beam pipeline option\(s\) \['flink_mastr'\]"):
        check_settings(BeamSettings(options=("--flink_mastr=host:8081",)), "/data")
    dataflow = check_settings(BeamSettings(options=(
        "--runner=DataflowRunner", "--project=my-project", "--region=us-central1",
        "--temp_location=gs://my-bucket/tmp")), "/data")
    assert dataflow[0] == "runner: DataflowRunner (options validated by Beam)"
