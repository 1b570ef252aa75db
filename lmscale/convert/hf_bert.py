"""Hugging Face BERT checkpoints in and out: names, layouts and the config mapping.

A Hugging Face `BertModel` stores one tensor per layer with PyTorch `Linear` layout
([out, in]); lmscale scans its layers, so each per-layer tensor becomes one slice of a
stacked array with a leading layer axis, and attention kernels are split per head
([d, heads, head_dim], output [heads, head_dim, d]). Every transform here is a transpose or
reshape, so conversion is exact in both directions. Hugging Face stores the vocabulary
unpadded: import pads the word embeddings and MLM bias with zero rows to the config's padded
size (`vocab_multiple` 1 for a config read from config.json), export cuts the padding off.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lmscale.errors import InputError
from lmscale.models.config import ModelConfig
from lmscale.models.vocab import fit_vocab, unpad_vocab

Params = dict  # {"params": {"bert": {...}, optional heads}}, numpy leaves

# Transforms between one Hugging Face tensor and its lmscale array: (to lmscale, to HF).
Transform = tuple[Callable[[np.ndarray, ModelConfig], np.ndarray],
                  Callable[[np.ndarray, ModelConfig], np.ndarray]]


def _identity(w, cfg):
    return w


def _transpose(w, cfg):
    return w.T


IDENTITY: Transform = (_identity, _identity)
LINEAR: Transform = (_transpose, _transpose)  # torch Linear [out, in] <-> kernel [in, out]
HEAD_KERNEL: Transform = (  # q/k/v: [heads*head_dim, d] <-> [d, heads, head_dim]
    lambda w, cfg: w.T.reshape(cfg.d_model, cfg.num_heads, cfg.head_dim),
    lambda w, cfg: w.reshape(cfg.d_model, cfg.d_model).T)
HEAD_BIAS: Transform = (
    lambda w, cfg: w.reshape(cfg.num_heads, cfg.head_dim),
    lambda w, cfg: w.reshape(cfg.d_model))
OUT_KERNEL: Transform = (  # attention output: [d, heads*head_dim] <-> [heads, head_dim, d]
    lambda w, cfg: w.T.reshape(cfg.num_heads, cfg.head_dim, cfg.d_model),
    lambda w, cfg: w.reshape(cfg.d_model, cfg.d_model).T)

# (Hugging Face name, lmscale path under params/bert, transform). Names are those of
# transformers' `BertModel`; a `BertForPreTraining` file prefixes them with "bert.".
EMBEDDINGS = [
    ("embeddings.word_embeddings.weight", ("word_embeddings", "embedding"), IDENTITY),
    ("embeddings.position_embeddings.weight", ("position_embeddings", "embedding"), IDENTITY),
    ("embeddings.token_type_embeddings.weight", ("type_embeddings", "embedding"), IDENTITY),
    ("embeddings.LayerNorm.weight", ("ln_embed", "norm", "scale"), IDENTITY),
    ("embeddings.LayerNorm.bias", ("ln_embed", "norm", "bias"), IDENTITY),
]
POOLER = [
    ("pooler.dense.weight", ("pooler", "kernel"), LINEAR),
    ("pooler.dense.bias", ("pooler", "bias"), IDENTITY),
]
LAYER = [  # under encoder.layer.{i}.; stacked under blocks/ with a leading layer axis
    ("attention.self.query.weight", ("attn", "query", "kernel"), HEAD_KERNEL),
    ("attention.self.query.bias", ("attn", "query", "bias"), HEAD_BIAS),
    ("attention.self.key.weight", ("attn", "key", "kernel"), HEAD_KERNEL),
    ("attention.self.key.bias", ("attn", "key", "bias"), HEAD_BIAS),
    ("attention.self.value.weight", ("attn", "value", "kernel"), HEAD_KERNEL),
    ("attention.self.value.bias", ("attn", "value", "bias"), HEAD_BIAS),
    ("attention.output.dense.weight", ("attn", "out", "kernel"), OUT_KERNEL),
    ("attention.output.dense.bias", ("attn", "out", "bias"), IDENTITY),
    ("attention.output.LayerNorm.weight", ("ln_attn", "norm", "scale"), IDENTITY),
    ("attention.output.LayerNorm.bias", ("ln_attn", "norm", "bias"), IDENTITY),
    ("intermediate.dense.weight", ("mlp", "up", "kernel"), LINEAR),
    ("intermediate.dense.bias", ("mlp", "up", "bias"), IDENTITY),
    ("output.dense.weight", ("mlp", "down", "kernel"), LINEAR),
    ("output.dense.bias", ("mlp", "down", "bias"), IDENTITY),
    ("output.LayerNorm.weight", ("ln_mlp", "norm", "scale"), IDENTITY),
    ("output.LayerNorm.bias", ("ln_mlp", "norm", "bias"), IDENTITY),
]
# Pretraining heads (`BertForPreTraining`'s `cls.*`), at the top of the lmscale tree. The
# MLM decoder weight is tied to the word embeddings in both codebases, so it is not stored.
HEADS = {
    "masked LM head": [
        ("cls.predictions.transform.dense.weight", ("mlm_transform", "kernel"), LINEAR),
        ("cls.predictions.transform.dense.bias", ("mlm_transform", "bias"), IDENTITY),
        ("cls.predictions.transform.LayerNorm.weight", ("mlm_ln", "norm", "scale"), IDENTITY),
        ("cls.predictions.transform.LayerNorm.bias", ("mlm_ln", "norm", "bias"), IDENTITY),
        ("cls.predictions.bias", ("mlm_bias",), IDENTITY),
    ],
    "next-sentence head": [
        ("cls.seq_relationship.weight", ("nsp", "kernel"), LINEAR),
        ("cls.seq_relationship.bias", ("nsp", "bias"), IDENTITY),
    ],
}
# Older checkpoints (the original TF conversion) name LayerNorm parameters gamma/beta.
_LEGACY_SUFFIXES = {".gamma": ".weight", ".beta": ".bias"}


@dataclass(frozen=True)
class ConvertedBert:
    config: ModelConfig
    params: Params
    absent: list[str]  # parts the source lacks (pooler, MLM/NSP heads)


def config_from_hf(hf: dict) -> ModelConfig:
    """lmscale shape from a transformers `BertConfig` dict; unsupported variants are errors.
    The vocabulary is unpadded, as stored (`for_tensor_parallel` pads it for a mesh)."""
    if hf.get("model_type", "bert") != "bert":
        raise InputError(f"config.json has model_type {hf.get('model_type')!r}; only BERT "
                         "checkpoints (model_type 'bert') can be converted")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise InputError(f"hidden_act {hf['hidden_act']!r} is not supported: lmscale BERT uses "
                         "exact (erf) GELU, transformers' 'gelu'")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise InputError("only absolute position embeddings are supported, not "
                         f"{hf['position_embedding_type']!r}")
    try:
        return ModelConfig(
            family="bert", vocab_size=hf["vocab_size"], max_len=hf["max_position_embeddings"],
            d_model=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"], d_ff=hf["intermediate_size"],
            type_vocab_size=hf.get("type_vocab_size", 2),
            dropout=hf.get("hidden_dropout_prob", 0.1),
            attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            initializer_range=hf.get("initializer_range", 0.02), vocab_multiple=1)
    except KeyError as err:
        raise InputError(f"config.json lacks {err.args[0]!r}; is this a BERT config?") from None


def config_to_hf(cfg: ModelConfig, architecture: str) -> dict:
    return {
        "architectures": [architecture], "model_type": "bert", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads, "intermediate_size": cfg.d_ff,
        "hidden_act": "gelu", "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout_rate,
        "max_position_embeddings": cfg.max_len, "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.initializer_range, "layer_norm_eps": cfg.layer_norm_eps,
        "position_embedding_type": "absolute", "pad_token_id": 0,
    }


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _normalise_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop the "bert." prefix and legacy gamma/beta names; keep `cls.*` heads as they are."""
    out = {}
    for name, value in tensors.items():
        for old, new in _LEGACY_SUFFIXES.items():
            if name.endswith(old):
                name = name[: -len(old)] + new
        out[name.removeprefix("bert.")] = value
    return out


def params_from_hf(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> ConvertedBert:
    """lmscale parameters from Hugging Face tensors; the encoder must be complete. The
    vocabulary is zero-padded to `cfg.padded_vocab_size` rows."""
    tensors = _normalise_names(tensors)
    bert: dict = {}

    def take(name: str, path: tuple[str, ...], transform: Transform, tree: dict) -> None:
        value = np.asarray(tensors[name], np.float32)
        _set(tree, path, np.ascontiguousarray(transform[0](value, cfg)))

    required = [n for n, _, _ in EMBEDDINGS] + [
        f"encoder.layer.{i}.{n}" for i in range(cfg.num_layers) for n, _, _ in LAYER]
    missing = [n for n in required if n not in tensors]
    if missing:
        raise InputError(f"the checkpoint lacks {len(missing)} encoder tensors (e.g. "
                         f"{missing[:3]}); it does not match its config.json")
    for name, path, transform in EMBEDDINGS:
        take(name, path, transform, bert)
    for suffix, path, transform in LAYER:
        stacked = [transform[0](np.asarray(tensors[f"encoder.layer.{i}.{suffix}"], np.float32),
                                cfg) for i in range(cfg.num_layers)]
        _set(bert, ("blocks", *path), np.stack(stacked))
    absent = []
    if all(n in tensors for n, _, _ in POOLER):
        for name, path, transform in POOLER:
            take(name, path, transform, bert)
    else:
        absent.append("pooler")
    params: dict = {"bert": bert}
    for head, entries in HEADS.items():
        if all(n in tensors for n, _, _ in entries):
            for name, path, transform in entries:
                take(name, path, transform, params)
        else:
            absent.append(head)
    _check_shapes(params, dataclasses.replace(cfg, vocab_multiple=1))  # as the file has them
    return ConvertedBert(cfg, fit_vocab({"params": params}, cfg), absent)


def _check_shapes(params: dict, cfg: ModelConfig) -> None:
    """Every converted array has the shape the lmscale model expects (config.json agrees)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from lmscale.models import BertForPretraining

    ids = jnp.zeros((1, 2), jnp.int32)
    expected = nn.unbox(jax.eval_shape(lambda: BertForPretraining(cfg).init(
        jax.random.key(0), ids, ids, ids, ids)))["params"]
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = tuple(p.key for p in path)
        want = _get(expected, keys)
        if want is None or tuple(want.shape) != tuple(leaf.shape):
            raise InputError(f"converted {'/'.join(keys)} has shape {tuple(leaf.shape)} but "
                             f"config.json implies {None if want is None else want.shape}")


def params_to_hf(params: Params, cfg: ModelConfig) -> tuple[dict[str, np.ndarray], str]:
    """(Hugging Face tensors, architecture name): `BertModel` names for an encoder alone,
    `BertForPreTraining` names ("bert." prefix, `cls.*`) when both heads are present. The
    vocabulary padding is cut off."""
    tree = unpad_vocab(params, cfg)["params"]
    bert = tree["bert"]
    with_heads = all(_get(tree, path) is not None
                     for entries in HEADS.values() for _, path, _ in entries)
    prefix = "bert." if with_heads else ""
    out: dict[str, np.ndarray] = {}

    def put(name: str, value, transform: Transform) -> None:
        out[name] = np.ascontiguousarray(transform[1](np.asarray(value, np.float32), cfg))

    for name, path, transform in EMBEDDINGS:
        put(prefix + name, _get(bert, path), transform)
    for suffix, path, transform in LAYER:
        stacked = _get(bert, ("blocks", *path))
        for i in range(cfg.num_layers):
            put(f"{prefix}encoder.layer.{i}.{suffix}", stacked[i], transform)
    if _get(bert, ("pooler", "kernel")) is not None:
        for name, path, transform in POOLER:
            put(prefix + name, _get(bert, path), transform)
    if with_heads:
        for entries in HEADS.values():
            for name, path, transform in entries:
                put(name, _get(tree, path), transform)
    return out, "BertForPreTraining" if with_heads else "BertModel"


def read_hf_tensors(model_dir: str) -> dict[str, np.ndarray]:
    """Tensors of `model.safetensors` (one file or an index of shards), else
    `pytorch_model.bin` read with `torch.load(weights_only=True)`, which refuses pickled
    code."""
    single = os.path.join(model_dir, "model.safetensors")
    index = single + ".index.json"
    if os.path.isfile(single) or os.path.isfile(index):
        from safetensors.numpy import load_file

        if os.path.isfile(single):
            return load_file(single)
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        tensors: dict[str, np.ndarray] = {}
        for shard in shards:
            tensors |= load_file(os.path.join(model_dir, shard))
        return tensors
    pickled = os.path.join(model_dir, "pytorch_model.bin")
    if os.path.isfile(pickled):
        try:
            import torch
        except ImportError:
            raise InputError(f"{pickled} is a PyTorch pickle; reading it safely needs torch "
                             "(pip install torch), or convert it to model.safetensors") from None
        try:
            state = torch.load(pickled, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch's UnpicklingError and friends
            raise InputError(f"{pickled} cannot be read as plain tensors ({err}); it may hold "
                             "pickled code, which lmscale refuses to run") from err
        return {k: v.float().numpy() for k, v in state.items() if hasattr(v, "numpy")}
    raise InputError(f"{model_dir!r} has no model.safetensors or pytorch_model.bin; point "
                     "--model-dir at a Hugging Face BERT checkpoint directory")


def read_hf_checkpoint(model_dir: str) -> ConvertedBert:
    """A Hugging Face BERT directory (weights + config.json) as lmscale config and params."""
    config_file = os.path.join(model_dir, "config.json")
    if not os.path.isfile(config_file):
        raise InputError(f"{model_dir!r} has no config.json; is it a Hugging Face checkpoint?")
    with open(config_file, encoding="utf-8") as f:
        cfg = config_from_hf(json.load(f))
    return params_from_hf(read_hf_tensors(model_dir), cfg)


def write_hf_checkpoint(out_dir: str, cfg: ModelConfig, params: Params) -> str:
    """`model.safetensors` + `config.json` in transformers' layout; returns the architecture."""
    from safetensors.numpy import save_file

    tensors, architecture = params_to_hf(params, cfg)
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config_to_hf(cfg, architecture), f, indent=2)
    return architecture
