"""A shard's examples: GPT packing and BERT's create_pretraining_data, run on the shard
alone with a seed of its own, written as one file per split, counted for the metadata."""

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader

from lmscale.data.bert_pretrain import create_pretraining_examples
from lmscale.data.corpus import held_out_mask, plan_shards, shard_documents
from lmscale.data.gpt_pretrain import pack_token_stream, token_stream
from lmscale.data.load_tokenizer import load_tokenizer
from lmscale.data.prepared import feature_dict, shard_file
from lmscale.data.shard_examples import (
    ExampleSpec, example_features, prepare_shard, split_examples, summarize, unigram_entropy,
)
from shard_corpus import write_shard_corpus


@pytest.fixture(scope="module")
def shard_corpus(tmp_path_factory) -> str:
    return write_shard_corpus(tmp_path_factory.mktemp("shard_corpus"))


@pytest.fixture(scope="module")
def shards(shard_corpus):
    return plan_shards([shard_corpus], "blank_line", shard_mb=1e-6)  # a file per shard


def _split(shard, fraction: float) -> tuple[list[str], list[str]]:
    docs = shard_documents(shard)
    mask = held_out_mask(len(docs), fraction, first_shard=shard.index == 0)
    return ([d for d, held in zip(docs, mask) if not held],
            [d for d, held in zip(docs, mask) if held])


def _rows(file: str, spec: ExampleSpec) -> list[dict[str, np.ndarray]]:
    reader = ArrayRecordReader(file)
    decode = feature_dict(example_features(spec)).deserialize_example_np
    return [decode(record) for record in reader.read_all()]


def test_gpt_shard_is_its_training_documents_packed_and_written_in_order(
        shards, docstring_tokenizer, tmp_path):
    spec = ExampleSpec(family="gpt", tokenizer=docstring_tokenizer, seq_len=32,
                       eval_fraction=0.25)
    tokenizer = load_tokenizer(docstring_tokenizer)
    train, held_out = _split(shards[1], 0.25)
    assert len(held_out) == len(train + held_out) // 4
    expected = pack_token_stream(token_stream(train, tokenizer), 32, tokenizer.pad_id)
    rows = list(split_examples(spec, "train", 1, train, tokenizer))
    for name, array in expected.items():
        np.testing.assert_array_equal(np.stack([r[name] for r in rows]), array)

    stats = prepare_shard(spec, shards[1], str(tmp_path), str(tmp_path))
    written = _rows(shard_file(str(tmp_path), "train", 1), spec)
    assert len(written) == len(rows) == stats["splits"]["train"]["examples"]
    assert all(np.array_equal(w["input_ids"], r["input_ids"]) for w, r in zip(written, rows))
    assert stats["splits"]["held_out"]["documents"] == len(held_out)
    targets = expected["targets"][expected["loss_mask"] > 0]
    counts = dict(zip(stats["splits"]["train"]["token_ids"],
                      stats["splits"]["train"]["token_counts"]))
    assert counts == {int(k): int(v) for k, v in zip(*np.unique(targets, return_counts=True))}


def test_bert_shard_is_create_pretraining_data_on_the_shard_with_its_own_seed(
        shards, docstring_tokenizer):
    spec = ExampleSpec(family="bert", tokenizer=docstring_tokenizer, seq_len=48,
                       max_predictions=8, dupe_factor=2, seed=3)
    tokenizer = load_tokenizer(docstring_tokenizer)
    train, _ = _split(shards[2], spec.eval_fraction)
    rows = list(split_examples(spec, "train", 2, train, tokenizer))
    # The original shuffles its instances at the end; the rows are the same otherwise.
    reference = create_pretraining_examples(train, tokenizer, spec.bert_options("train", 2))
    assert len(rows) == len(reference["input_ids"]) > 100

    def as_bytes(row: dict) -> bytes:
        return b"".join(np.asarray(row[k]).tobytes() for k in sorted(row))

    assert sorted(map(as_bytes, rows)) == sorted(
        as_bytes({k: v[i] for k, v in reference.items()}) for i in range(len(rows)))
    # Another shard index, another seed: the same documents get other pairs and masks.
    other = list(split_examples(spec, "train", 3, train, tokenizer))
    assert sum(np.array_equal(a["masked_lm_positions"], b["masked_lm_positions"])
               for a, b in zip(rows, other)) < len(rows) // 4


def test_summary_adds_up_the_shards_and_gives_the_unigram_baseline(
        shards, docstring_tokenizer, tmp_path):
    spec = ExampleSpec(family="gpt", tokenizer=docstring_tokenizer, seq_len=64)
    for shard in shards:
        prepare_shard(spec, shard, str(tmp_path), str(tmp_path))
    metadata, lengths = summarize(str(tmp_path), shards, 512)
    files = {split: [_rows(shard_file(str(tmp_path), split, s.index), spec) for s in shards]
             for split in ("train", "held_out")}
    assert lengths["train"] == [(s.index, len(files["train"][s.index]), lengths["train"][i][2])
                                for i, s in enumerate(shards)]
    assert metadata["examples"] == {k: sum(map(len, v)) for k, v in files.items()}
    assert metadata["shards"] == 4 and metadata["skipped_sources"] == []
    targets = np.concatenate([r["targets"][r["loss_mask"] > 0]
                              for rows in files["train"] for r in rows])
    assert metadata["unigram_loss"] == pytest.approx(
        unigram_entropy(np.bincount(targets, minlength=512)), rel=1e-12)
