"""Conversion and exports keep the vocabulary unpadded, whatever padding a model uses:
Hugging Face import pads with zero rows and export cuts them off, an lmscale export holds
the unpadded arrays, and loading pads them to the requested tensor size."""

import dataclasses
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from safetensors.numpy import load_file

from lmscale.cli import main
from lmscale.convert.hf_bert import params_from_hf as bert_from_hf
from lmscale.convert.hf_bert import params_to_hf as bert_to_hf
from lmscale.convert.hf_bert import read_hf_checkpoint
from lmscale.convert.hf_gpt2 import params_from_hf, params_to_hf, read_hf_gpt2
from lmscale.convert.pretrained import export_hf, load_pretrained, save_pretrained
from lmscale.errors import ConfigError
from lmscale.models import GPT
from lmscale.train.checkpoint import Checkpointer
from lmscale.train.state import TrainState

TINY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tiny_gpt2")
VOCAB = 264  # the tiny GPT-2's; 384 rows at tensor 1, 512 at tensor 2 or 4
IDS = np.random.default_rng(0).integers(0, VOCAB, (2, 12))


def wte(params) -> np.ndarray:
    return np.asarray(params["params"]["wte"]["embedding"])


def test_hf_gpt2_import_pads_with_zeros_and_export_cuts_the_padding():
    source = load_file(os.path.join(TINY, "model.safetensors"))
    converted = read_hf_gpt2(TINY)
    assert converted.config.vocab_multiple == 1 and wte(converted.params).shape == (VOCAB, 32)
    cfg = converted.config.for_tensor_parallel(2)
    padded = params_from_hf(source, cfg)
    assert wte(padded).shape == (512, 32) and np.all(wte(padded)[VOCAB:] == 0)
    np.testing.assert_array_equal(wte(padded)[:VOCAB], source["transformer.wte.weight"])
    back = params_to_hf(padded, cfg)
    for name, value in back.items():
        np.testing.assert_array_equal(value, source[name], err_msg=name)
    logits = GPT(cfg).apply(padded, jnp.asarray(IDS))
    reference = GPT(converted.config).apply(converted.params, jnp.asarray(IDS))
    assert logits.shape[-1] == 512
    np.testing.assert_allclose(logits[..., :VOCAB], reference, rtol=1e-5, atol=1e-5)


def test_hf_bert_import_pads_and_export_cuts(tiny_hf_bert):
    source = load_file(os.path.join(tiny_hf_bert, "model.safetensors"))
    cfg = read_hf_checkpoint(tiny_hf_bert).config
    padded_cfg = cfg.for_tensor_parallel(2)
    converted = bert_from_hf(source, padded_cfg)
    table = converted.params["params"]["bert"]["word_embeddings"]["embedding"]
    assert table.shape == (256, 32) and np.all(table[cfg.vocab_size:] == 0)
    tensors, architecture = bert_to_hf(converted.params, padded_cfg)
    assert architecture == "BertModel" and tensors.keys() == source.keys()
    for name, value in tensors.items():
        np.testing.assert_array_equal(value, source[name], err_msg=name)


def test_export_stores_unpadded_arrays_and_loading_pads_to_the_tensor_size(tmp_path):
    at_two = load_pretrained(TINY, tensor=2)
    assert at_two.config.padded_vocab_size == 512 and wte(at_two.params).shape == (512, 32)
    assert np.all(wte(at_two.params)[VOCAB:] == 0)
    out = tmp_path / "export"
    save_pretrained(str(out), at_two.config, at_two.params, at_two.tokenizer_files)
    assert json.loads((out / "model_config.json").read_text())["vocab_multiple"] == 1
    with ocp.StandardCheckpointer() as checkpointer:
        stored = checkpointer.restore(os.path.abspath(out / "params"))
    assert np.shape(stored["params"]["wte"]["embedding"]) == (VOCAB, 32)

    plain = load_pretrained(str(out))
    assert plain.config.vocab_multiple == 1 and wte(plain.params).shape == (VOCAB, 32)
    at_four = load_pretrained(str(out), tensor=4)
    assert at_four.config.vocab_multiple == 512 and wte(at_four.params).shape == (512, 32)
    reference = GPT(plain.config).apply(plain.params, jnp.asarray(IDS))
    logits = GPT(at_four.config).apply(at_four.params, jnp.asarray(IDS))
    np.testing.assert_allclose(logits[..., :VOCAB], reference, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="sizes that do: 1, 2, 4"):
        load_pretrained(str(out), tensor=8)  # 4 heads, d_ff 128


def test_a_run_padded_for_tensor_4_exports_unpadded_and_converts_exactly(tmp_path):
    """A pretrain run directory whose checkpoint holds 512 rows (trained at tensor 4),
    though its config.json says the default multiple."""
    converted = read_hf_gpt2(TINY)
    cfg = converted.config.for_tensor_parallel(4)
    params = jax.tree.map(jnp.asarray, params_from_hf(load_file(
        os.path.join(TINY, "model.safetensors")), cfg))
    run = tmp_path / "run"
    checkpointer = Checkpointer(str(run / "checkpoints"), async_save=False)
    checkpointer.save(TrainState(step=jnp.asarray(3, jnp.int32), params=params,
                                 opt_state=(jnp.zeros(2),)), {}, force=True)
    checkpointer.close()
    run_model = dataclasses.asdict(dataclasses.replace(cfg, vocab_multiple=128))
    (run / "config.json").write_text(json.dumps({"model": run_model,
                                                 "data": {"tokenizer": TINY}}))
    loaded = load_pretrained(str(run))
    assert loaded.config == converted.config and wte(loaded.params).shape == (VOCAB, 32)
    assert main(["export", "--workdir", str(run), "--out", str(tmp_path / "export")]) == 0
    assert main(["convert", "to-hf", "--checkpoint", str(tmp_path / "export"), "--out",
                 str(tmp_path / "hf")]) == 0
    source = load_file(os.path.join(TINY, "model.safetensors"))
    again = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert again["transformer.wte.weight"].shape == (VOCAB, 32)
    for name, value in again.items():
        np.testing.assert_array_equal(value, source[name], err_msg=name)
    assert export_hf(str(run), str(tmp_path / "hf2")) == "GPT2LMHeadModel"


def test_init_padding_rows_are_cut_on_export(tmp_path):
    """A fresh model's padding rows hold random initial values; no export keeps them."""
    cfg = read_hf_gpt2(TINY).config.for_tensor_parallel(2)
    params = jax.device_get(nn.unbox(GPT(cfg).init(jax.random.key(0),
                                                   jnp.zeros((1, 2), jnp.int32))))
    assert np.any(wte(params)[VOCAB:] != 0)
    tensors = params_to_hf(params, cfg)
    np.testing.assert_array_equal(tensors["transformer.wte.weight"], wte(params)[:VOCAB])
