"""Hugging Face GPT-2 in and out: logits parity with transformers, exact round trip, and
clear errors for checkpoints lmscale's GPT cannot represent."""

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from lmscale.cli import main
from lmscale.convert.hf_gpt2 import params_from_hf, params_to_hf, read_hf_gpt2
from lmscale.convert.pretrained import load_pretrained
from lmscale.errors import InputError
from lmscale.models import GPT

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
TINY = os.path.join(DATA, "tiny_gpt2")  # made by make_gpt2_reference.py


def lmscale_logits(directory: str, input_ids: np.ndarray) -> np.ndarray:
    pretrained = load_pretrained(directory)
    return np.asarray(GPT(pretrained.config).apply(pretrained.params, jnp.asarray(input_ids)))


def test_logits_match_committed_transformers_reference():
    reference = np.load(os.path.join(DATA, "tiny_gpt2_logits.npz"))
    logits = lmscale_logits(TINY, reference["input_ids"])
    assert np.max(np.abs(logits - reference["logits"])) < 1e-4
    assert np.std(reference["logits"]) > 0.3  # random weights at a scale that shows errors


def test_round_trip_is_exact_through_the_cli(tmp_path):
    converted, exported = tmp_path / "lmscale", tmp_path / "hf"
    assert main(["convert", "hf", "--model-dir", TINY, "--out", str(converted)]) == 0
    assert main(["convert", "to-hf", "--checkpoint", str(converted), "--out",
                 str(exported)]) == 0
    original = load_file(os.path.join(TINY, "model.safetensors"))
    original = {k: v for k, v in original.items() if k != "lm_head.weight"}
    again = load_file(str(exported / "model.safetensors"))
    assert set(again) == set(original)
    for name, value in original.items():
        np.testing.assert_array_equal(again[name], value, err_msg=name)
    hf_config = json.loads((exported / "config.json").read_text())
    assert hf_config["model_type"] == "gpt2" and hf_config["n_layer"] == 2
    assert (exported / "vocab.json").is_file() and (exported / "merges.txt").is_file()
    pretrained = load_pretrained(str(converted))
    assert pretrained.tokenizer.eot_id == 260 and pretrained.config.vocab_size == 264


def test_params_round_trip_exactly():
    converted = read_hf_gpt2(TINY)
    back = params_to_hf(converted.params, converted.config)
    again = params_from_hf(back, converted.config)
    flat = lambda t: {k: v for k, v in params_to_hf(t, converted.config).items()}  # noqa: E731
    for name, value in flat(converted.params).items():
        np.testing.assert_array_equal(flat(again)[name], value)


def test_untied_head_and_unsupported_activation_are_errors(tmp_path):
    copy = tmp_path / "gpt2"
    shutil.copytree(TINY, copy)
    tensors = load_file(str(copy / "model.safetensors"))
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"] + 1.0
    save_file(tensors, str(copy / "model.safetensors"))
    with pytest.raises(InputError, match="untied LM head"):
        read_hf_gpt2(str(copy))
    config = json.loads((copy / "config.json").read_text())
    config["activation_function"] = "relu"
    (copy / "config.json").write_text(json.dumps(config))
    assert main(["convert", "hf", "--model-dir", str(copy), "--out",
                 str(tmp_path / "out")]) == 2


def test_parity_with_transformers_both_directions(tmp_path):
    """Optional: needs torch and transformers (not install requirements)."""
    torch = pytest.importorskip("torch", reason="torch not installed; the committed "
                                "reference arrays cover parity")
    transformers = pytest.importorskip("transformers", reason="transformers not installed")
    config = transformers.GPT2Config(vocab_size=264, n_positions=24, n_embd=48, n_layer=3,
                                     n_head=6, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=260, eos_token_id=260)
    torch.manual_seed(1)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.3)
    hf_dir = tmp_path / "hf"
    model.save_pretrained(hf_dir)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(TINY, name), hf_dir / name)
    ids = np.random.default_rng(0).integers(0, 264, size=(3, 24))
    with torch.no_grad():
        expected = model(torch.from_numpy(ids)).logits.numpy()
    assert np.max(np.abs(lmscale_logits(str(hf_dir), ids) - expected)) < 1e-4
    assert main(["convert", "hf", "--model-dir", str(hf_dir), "--out", str(tmp_path / "l")]) == 0
    assert main(["convert", "to-hf", "--checkpoint", str(tmp_path / "l"), "--out",
                 str(tmp_path / "back")]) == 0
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        again = reloaded(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_array_equal(again, expected)
