"""Conversion of Hugging Face BERT checkpoints: parity with transformers and exact round
trips."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import SHARED_DATA
from lmscale.convert.hf_bert import read_hf_checkpoint
from lmscale.convert.pretrained import convert_hf, export_hf, load_pretrained
from lmscale.data.wordpiece import WordPieceTokenizer
from lmscale.errors import InputError
from lmscale.models import BertModel

MINILM = os.path.join(SHARED_DATA, "models", "all-MiniLM-L6-v2")
REFERENCE = os.path.join(os.path.dirname(__file__), "data", "minilm_reference.npz")
needs_minilm = pytest.mark.skipif(not os.path.isdir(MINILM),
                                  reason=f"shared checkpoint not found at {MINILM}")


def encoder_outputs(model_dir: str, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
    converted = read_hf_checkpoint(model_dir)
    hidden, pooled = BertModel(converted.config).apply(
        {"params": converted.params["params"]["bert"]},
        *(jnp.asarray(inputs[k]) for k in ("input_ids", "token_type_ids", "attention_mask")))
    return np.asarray(hidden), np.asarray(pooled)


@needs_minilm
def test_minilm_matches_transformers_reference_arrays():
    ref = np.load(REFERENCE)
    hidden, pooled = encoder_outputs(MINILM, ref)
    dims = ref["dims"]
    # Every position, padding included: both implementations let padded queries attend to
    # the real tokens only, so even those rows agree.
    assert np.abs(hidden[..., dims] - ref["hidden"]).max() < 1e-4
    assert np.abs(pooled[..., dims] - ref["pooled"]).max() < 1e-4
    assert ref["attention_mask"].min() == 0 and ref["token_type_ids"].max() == 1


@needs_minilm
def test_minilm_tokenizer_gives_the_reference_ids():
    ref = np.load(REFERENCE)
    tokenizer = WordPieceTokenizer.from_checkpoint_dir(MINILM)
    first = ref["input_ids"][1][ref["attention_mask"][1] == 1]
    assert first.tolist() == [tokenizer.cls_id, *tokenizer.encode("Hello world!"),
                              tokenizer.sep_id]


@needs_minilm
def test_minilm_matches_pytorch_transformers_directly():
    torch = pytest.importorskip("torch", reason="torch not installed (optional parity check)")
    transformers = pytest.importorskip("transformers", reason="transformers not installed")
    tokenizer = transformers.AutoTokenizer.from_pretrained(MINILM)
    batch = tokenizer(["A short one.", "A somewhat longer sentence about the river Seine."],
                      padding=True, return_tensors="pt")
    with torch.no_grad():
        out = transformers.BertModel.from_pretrained(MINILM).eval()(**batch)
    hidden, pooled = encoder_outputs(MINILM, {k: v.numpy() for k, v in batch.items()})
    assert np.abs(hidden - out.last_hidden_state.numpy()).max() < 1e-4
    assert np.abs(pooled - out.pooler_output.numpy()).max() < 1e-4


def test_hf_to_lmscale_to_hf_is_exact(tiny_hf_bert, tmp_path):
    absent = convert_hf(tiny_hf_bert, str(tmp_path / "lm"))
    assert absent == ["masked LM head", "next-sentence head"]
    assert export_hf(str(tmp_path / "lm"), str(tmp_path / "hf")) == "BertModel"
    source = load_file(os.path.join(tiny_hf_bert, "model.safetensors"))
    back = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert source.keys() == back.keys()
    for name in source:
        np.testing.assert_array_equal(source[name], back[name], err_msg=name)
    assert (tmp_path / "hf" / "vocab.txt").read_text() == \
        open(os.path.join(tiny_hf_bert, "vocab.txt")).read()


def test_lmscale_to_hf_to_lmscale_is_exact_with_pretraining_heads(tiny_hf_bert, tmp_path):
    from lmscale.convert.pretrained import save_pretrained

    start = load_pretrained(tiny_hf_bert)
    rng = np.random.default_rng(0)
    d, vocab = start.config.d_model, start.config.vocab_size
    params = {"params": {**start.params["params"],
                         "mlm_transform": {"kernel": rng.normal(size=(d, d)).astype(np.float32),
                                           "bias": rng.normal(size=d).astype(np.float32)},
                         "mlm_ln": {"norm": {"scale": rng.normal(size=d).astype(np.float32),
                                             "bias": rng.normal(size=d).astype(np.float32)}},
                         "mlm_bias": rng.normal(size=vocab).astype(np.float32),
                         "nsp": {"kernel": rng.normal(size=(d, 2)).astype(np.float32),
                                 "bias": rng.normal(size=2).astype(np.float32)}}}
    save_pretrained(str(tmp_path / "lm"), start.config, params, start.tokenizer_files)
    assert export_hf(str(tmp_path / "lm"), str(tmp_path / "hf")) == "BertForPreTraining"
    assert "bert.pooler.dense.weight" in load_file(str(tmp_path / "hf" / "model.safetensors"))
    convert_hf(str(tmp_path / "hf"), str(tmp_path / "lm2"))
    again = load_pretrained(str(tmp_path / "lm2"))
    assert again.config == start.config
    flat = dict(jax.tree_util.tree_flatten_with_path(again.params)[0])
    for path, value in jax.tree_util.tree_flatten_with_path(params)[0]:
        np.testing.assert_array_equal(flat[path], value, err_msg=jax.tree_util.keystr(path))


def test_checkpoint_disagreeing_with_its_config_is_an_input_error(tiny_hf_bert, tmp_path):
    import json
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_hf_bert, broken)
    config = json.loads((broken / "config.json").read_text())
    config["num_hidden_layers"] = 3  # the file has 2 layers
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="lacks 16 encoder tensors"):
        read_hf_checkpoint(str(broken))
    (broken / "model.safetensors").unlink()
    with pytest.raises(InputError, match="no model.safetensors or pytorch_model.bin"):
        read_hf_checkpoint(str(broken))
