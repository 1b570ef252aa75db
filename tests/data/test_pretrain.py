"""Pretraining data, prepared once: the tokenizer trains on a bounded, seeded sample; bad
source shards stop preparation by name or are skipped and counted; a failed preparation
leaves nothing that could be used."""

import logging
import os

import pytest

from lmscale.data import pretrain as data_pretrain
from lmscale.data.corpus import plan_shards
from lmscale.data.prepared import METADATA, is_prepared
from lmscale.data.pretrain import describe_plan, prepare_pretraining_data, sample_training_lines
from lmscale.errors import ConfigError, InputError
from lmscale.models import ModelConfig
from lmscale.train.defaults import pretrain_config
from shard_corpus import write_shard_corpus


@pytest.fixture(scope="module")
def shard_corpus(tmp_path_factory) -> str:
    return write_shard_corpus(tmp_path_factory.mktemp("shard_corpus"))


def config(sources: list[str], tokenizer: str = "", **data):
    c = pretrain_config("gpt2-tiny", vocab_size=512)
    c.data.sources = sources
    c.data.tokenizer = tokenizer
    c.data.document_split = "blank_line"
    c.data.shard_mb = 1e-9  # every file its own shard
    c.data.seq_len = 32
    for key, value in data.items():
        c.data[key] = value
    return c


def prepare(c, workdir):
    return prepare_pretraining_data(c.data, ModelConfig.from_dict(c.model.to_dict()),
                                    str(workdir), c.data.seq_len,
                                    c.data.max_predictions_per_seq)


@pytest.fixture
def many_files(tmp_path) -> str:
    """20 files of 5 two-line documents each: 10 lines a file."""
    for f in range(20):
        docs = [f"file {f} doc {d} line one\nfile {f} doc {d} line two" for d in range(5)]
        (tmp_path / f"f{f:02d}.txt").write_text("\n\n".join(docs), encoding="utf-8")
    return str(tmp_path / "*.txt")


def test_tokenizer_sample_is_bounded_seeded_and_reads_few_shards(many_files, monkeypatch):
    shards = plan_shards([many_files], "blank_line", shard_mb=1e-9)
    c = config([many_files], tokenizer_sample_sentences=8, eval_fraction=0.2)
    read = []

    def counting(shard, on_bad=None):
        read.append(shard.index)
        return original(shard, on_bad)

    original = data_pretrain.shard_documents
    monkeypatch.setattr(data_pretrain, "shard_documents", counting)
    sample = sample_training_lines(shards, c.data)
    assert len(sample) == 8 and len(set(sample)) == 8
    # Shards are read until 4 x 8 lines were seen: 4 of the 20 files (8 training lines each).
    assert len(read) == 4 and read != [0, 1, 2, 3]
    assert all("doc 4" not in line for line in sample)  # every 5th document is held out
    assert sample_training_lines(shards, c.data) == sample  # the seed decides
    c.data.seed = 1
    assert sample_training_lines(shards, c.data) != sample


def test_a_corpus_smaller_than_the_sample_is_taken_whole_and_in_order(tmp_path):
    corpus = tmp_path / "one.txt"
    corpus.write_text("a b\nc d\n\ne f\n\ng h\ni j\n\nk", encoding="utf-8")
    c = config([str(corpus)], eval_fraction=0.5)  # holds out documents 2 and 4
    lines = sample_training_lines(plan_shards([str(corpus)], "blank_line"), c.data)
    assert lines == ["a b", "c d", "g h", "i j"]


def test_bad_shards_stop_preparation_by_name_or_are_skipped_and_counted(
        shard_corpus, docstring_tokenizer, tmp_path, caplog):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    folder = os.path.dirname(shard_corpus)
    for name in sorted(os.listdir(folder)):
        os.symlink(os.path.join(folder, name), corpus / name)
    (corpus / "part0b.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (corpus / "part2b.txt").write_text("\n \n", encoding="utf-8")
    c = config([str(corpus / "*.txt")], docstring_tokenizer, prepared_dir=str(tmp_path / "p"))
    with pytest.raises(InputError, match="part0b.txt' is not valid UTF-8"):
        prepare(c, tmp_path)
    [key] = os.listdir(tmp_path / "p")
    assert not is_prepared(str(tmp_path / "p"), key)
    assert os.listdir(tmp_path / "p" / key / "lmscale_examples") == []  # no incomplete-*

    c.data.skip_bad_shards = True
    with caplog.at_level(logging.WARNING):
        data = prepare(c, tmp_path)
    skipped = data.metadata["skipped_sources"]
    assert [(os.path.basename(s["source"]), s["reason"].split(" (")[0]) for s in skipped] == [
        ("part0b.txt", "is not valid UTF-8"), ("part2b.txt", "is empty")]
    assert "2 source shard(s) skipped" in caplog.text and "part2b.txt" in caplog.text
    assert data.metadata["shards"] == 6 and len(data.train) == data.metadata["examples"]["train"]


def test_a_preparation_that_fails_midway_leaves_nothing_usable(
        shard_corpus, docstring_tokenizer, tmp_path, monkeypatch):
    c = config([shard_corpus], docstring_tokenizer, prepared_dir=str(tmp_path / "p"))
    done = []
    original = data_pretrain.prepare_shard

    def dies_at_the_third_shard(spec, shard, out_dir, stats_dir):
        if len(done) == 2:
            raise RuntimeError("killed")
        done.append(original(spec, shard, out_dir, stats_dir))
        return done[-1]

    monkeypatch.setattr(data_pretrain, "prepare_shard", dies_at_the_third_shard)
    with pytest.raises(RuntimeError, match="killed"):
        prepare(c, tmp_path)
    [key] = os.listdir(tmp_path / "p")
    assert not is_prepared(str(tmp_path / "p"), key)
    assert os.listdir(tmp_path / "p" / key / "lmscale_examples") == []
    monkeypatch.setattr(data_pretrain, "prepare_shard", original)
    data = prepare(c, tmp_path)
    assert is_prepared(str(tmp_path / "p"), key)
    assert os.path.isfile(tmp_path / "p" / key / METADATA) and len(data.held_out) > 0


def test_dry_run_describes_the_plan_and_runner_names_are_checked(shard_corpus, tmp_path):
    c = config([shard_corpus])
    assert describe_plan(c.data, str(tmp_path))[1] == (
        "runner: in_process (this process, shard after shard)")
    assert describe_plan(c.data, str(tmp_path))[0].startswith("4 shard(s)")
    c.data.prepare_runner = "dataflow"
    with pytest.raises(ConfigError, match="data.prepare_runner 'dataflow' must be one of"):
        describe_plan(c.data, str(tmp_path))
