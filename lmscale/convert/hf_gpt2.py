"""Hugging Face GPT-2 checkpoints in and out: names, layouts and the config mapping.

transformers' GPT-2 stores its projections as `Conv1D` ([in, out], no transpose needed)
and fuses query/key/value into one `c_attn` of width 3·d. lmscale scans its layers (one
stacked array per parameter, leading layer axis) and keeps attention kernels per head
([d, heads, head_dim]; output [heads, head_dim, d]). Every transform is a split, concat or
reshape, so conversion is exact both ways. The LM head is tied to the token embedding in
both codebases (transformers drops `lm_head.weight` from saved files for that reason).
Hugging Face stores the vocabulary unpadded: import pads `wte` with zero rows to the
config's padded size (`vocab_multiple` 1 for a config read from config.json), export cuts
the padding off.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

import numpy as np

from lmscale.convert.hf_bert import read_hf_tensors
from lmscale.errors import InputError
from lmscale.models.config import ModelConfig
from lmscale.models.vocab import fit_vocab, unpad_vocab

Params = dict  # {"params": {"wte": ..., "wpe": ..., "blocks": ..., "ln_f": ...}}, numpy leaves
ARCHITECTURE = "GPT2LMHeadModel"
# transformers' names for GELU with the tanh approximation, which GPT-2 was trained with.
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")

TOP = [  # (Hugging Face name without "transformer.", lmscale path)
    ("wte.weight", ("wte", "embedding")),
    ("wpe.weight", ("wpe", "embedding")),
    ("ln_f.weight", ("ln_f", "norm", "scale")),
    ("ln_f.bias", ("ln_f", "norm", "bias")),
]
LAYER = [  # under h.{i}.; stacked under blocks/ (c_attn is split, see below)
    ("ln_1.weight", ("ln_attn", "norm", "scale")),
    ("ln_1.bias", ("ln_attn", "norm", "bias")),
    ("ln_2.weight", ("ln_mlp", "norm", "scale")),
    ("ln_2.bias", ("ln_mlp", "norm", "bias")),
    ("mlp.c_fc.weight", ("mlp", "up", "kernel")),
    ("mlp.c_fc.bias", ("mlp", "up", "bias")),
    ("mlp.c_proj.weight", ("mlp", "down", "kernel")),
    ("mlp.c_proj.bias", ("mlp", "down", "bias")),
    ("attn.c_proj.bias", ("attn", "out", "bias")),
]
QKV = ("query", "key", "value")  # the order of c_attn's three column blocks


@dataclass(frozen=True)
class ConvertedGPT2:
    config: ModelConfig
    params: Params
    absent: list[str]  # always empty: a GPT-2 checkpoint has every part lmscale's GPT has


def config_from_hf(hf: dict) -> ModelConfig:
    """lmscale shape from a transformers `GPT2Config` dict; unsupported variants are errors.
    The vocabulary is unpadded, as stored (`for_tensor_parallel` pads it for a mesh)."""
    if hf.get("model_type") != "gpt2":
        raise InputError(f"config.json has model_type {hf.get('model_type')!r}, not 'gpt2'")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in TANH_GELU:
        raise InputError(f"activation_function {activation!r} is not supported: lmscale GPT "
                         f"uses tanh-approximated GELU ({', '.join(TANH_GELU)})")
    for key, supported in (("scale_attn_weights", True),
                           ("scale_attn_by_inverse_layer_idx", False),
                           ("add_cross_attention", False)):
        if hf.get(key, supported) != supported:
            raise InputError(f"config.json sets {key}={hf[key]}; lmscale GPT supports only "
                             f"{supported}")
    try:
        d_model = hf["n_embd"]
        return ModelConfig(
            family="gpt", vocab_size=hf["vocab_size"],
            max_len=hf.get("n_positions", hf.get("n_ctx")), d_model=d_model,
            num_layers=hf["n_layer"], num_heads=hf["n_head"],
            d_ff=hf.get("n_inner") or 4 * d_model, dropout=hf.get("resid_pdrop", 0.1),
            attention_dropout=hf.get("attn_pdrop", 0.1),
            layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            initializer_range=hf.get("initializer_range", 0.02), vocab_multiple=1)
    except KeyError as err:
        raise InputError(f"config.json lacks {err.args[0]!r}; is this a GPT-2 config?") from None


def config_to_hf(cfg: ModelConfig) -> dict:
    return {
        "architectures": [ARCHITECTURE], "model_type": "gpt2", "vocab_size": cfg.vocab_size,
        "n_positions": cfg.max_len, "n_embd": cfg.d_model, "n_layer": cfg.num_layers,
        "n_head": cfg.num_heads, "n_inner": cfg.d_ff, "activation_function": "gelu_new",
        "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.attention_dropout_rate,
        "layer_norm_epsilon": cfg.layer_norm_eps, "initializer_range": cfg.initializer_range,
        "scale_attn_weights": True, "tie_word_embeddings": True,
    }


def _set(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = np.ascontiguousarray(value, np.float32)


def _get(tree: dict, path: tuple[str, ...]) -> np.ndarray:
    for key in path:
        tree = tree[key]
    return np.asarray(tree, np.float32)


def params_from_hf(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> Params:
    """lmscale GPT parameters from `GPT2LMHeadModel` or `GPT2Model` tensors, the
    vocabulary zero-padded to `cfg.padded_vocab_size` rows."""
    tensors = {k.removeprefix("transformer."): np.asarray(v, np.float32)
               for k, v in tensors.items()}
    head = tensors.pop("lm_head.weight", None)
    if head is not None and not np.array_equal(head, tensors.get("wte.weight")):
        raise InputError("lm_head.weight differs from wte.weight: an untied LM head is not "
                         "supported (lmscale GPT ties them, as GPT-2 does)")
    required = [n for n, _ in TOP] + [f"h.{i}.{n}" for i in range(cfg.num_layers)
                                      for n in [*(n for n, _ in LAYER), "attn.c_attn.weight",
                                                "attn.c_attn.bias", "attn.c_proj.weight"]]
    missing = [n for n in required if n not in tensors]
    if missing:
        raise InputError(f"the checkpoint lacks {len(missing)} GPT-2 tensors (e.g. "
                         f"{missing[:3]}); it does not match its config.json")
    tree: dict = {}
    for name, path in TOP:
        _set(tree, path, tensors[name])
    d, h, hd = cfg.d_model, cfg.num_heads, cfg.head_dim

    def stack(suffix: str) -> np.ndarray:
        return np.stack([tensors[f"h.{i}.{suffix}"] for i in range(cfg.num_layers)])

    for suffix, path in LAYER:
        _set(tree, ("blocks", *path), stack(suffix))
    c_attn_w, c_attn_b = stack("attn.c_attn.weight"), stack("attn.c_attn.bias")
    for j, name in enumerate(QKV):
        columns = slice(j * d, (j + 1) * d)
        _set(tree, ("blocks", "attn", name, "kernel"),
             c_attn_w[:, :, columns].reshape(-1, d, h, hd))
        _set(tree, ("blocks", "attn", name, "bias"), c_attn_b[:, columns].reshape(-1, h, hd))
    _set(tree, ("blocks", "attn", "out", "kernel"),
         stack("attn.c_proj.weight").reshape(-1, h, hd, d))
    _check_shapes(tree, dataclasses.replace(cfg, vocab_multiple=1))  # as the file has them
    return fit_vocab({"params": tree}, cfg)


def _check_shapes(tree: dict, cfg: ModelConfig) -> None:
    """Every converted array has the shape lmscale's GPT expects (config.json agrees)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from lmscale.models import GPT

    expected = nn.unbox(jax.eval_shape(lambda: GPT(cfg).init(
        jax.random.key(0), jnp.zeros((1, 2), jnp.int32))))["params"]
    want = {jax.tree_util.keystr(p): v.shape
            for p, v in jax.tree_util.tree_flatten_with_path(expected)[0]}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = jax.tree_util.keystr(path)
        if want.get(name) != leaf.shape:
            raise InputError(f"converted {name} has shape {leaf.shape} but config.json implies "
                             f"{want.get(name)}")


def params_to_hf(params: Params, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """`GPT2LMHeadModel` tensors (tied head not stored, as transformers saves it), the
    vocabulary padding cut off."""
    tree = unpad_vocab(params, cfg)["params"]
    out: dict[str, np.ndarray] = {}
    for name, path in TOP:
        out[f"transformer.{name}"] = _get(tree, path)
    blocks = tree["blocks"]
    layers = cfg.num_layers
    per_layer = {suffix: _get(blocks, path) for suffix, path in LAYER}
    per_layer["attn.c_attn.weight"] = np.concatenate(
        [_get(blocks, ("attn", n, "kernel")).reshape(layers, cfg.d_model, -1) for n in QKV],
        axis=-1)
    per_layer["attn.c_attn.bias"] = np.concatenate(
        [_get(blocks, ("attn", n, "bias")).reshape(layers, -1) for n in QKV], axis=-1)
    per_layer["attn.c_proj.weight"] = _get(blocks, ("attn", "out", "kernel")).reshape(
        layers, -1, cfg.d_model)
    for suffix, stacked in per_layer.items():
        for i in range(layers):
            out[f"transformer.h.{i}.{suffix}"] = np.ascontiguousarray(stacked[i])
    return out


def read_hf_gpt2(model_dir: str) -> ConvertedGPT2:
    """A Hugging Face GPT-2 directory (weights + config.json) as lmscale config and params."""
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = config_from_hf(json.load(f))
    return ConvertedGPT2(cfg, params_from_hf(read_hf_tensors(model_dir), cfg), [])


def write_hf_gpt2(out_dir: str, cfg: ModelConfig, params: Params) -> str:
    """`model.safetensors` + `config.json` in transformers' layout; returns the architecture."""
    from safetensors.numpy import save_file

    os.makedirs(out_dir, exist_ok=True)
    save_file(params_to_hf(params, cfg), os.path.join(out_dir, "model.safetensors"),
              metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config_to_hf(cfg), f, indent=2)
    return ARCHITECTURE
