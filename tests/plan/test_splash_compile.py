"""The splash attention kernel compiles into a real train step for a TPU topology (libtpu
gives the topology on this CPU; nothing runs): `attention_impl="auto"` takes it because the
mesh's devices are TPUs, and it runs under shard_map with the batch split over fsdp and the
heads over tensor. Its numbers against XLA's are tests/models/test_attention_impl.py's."""

import os
import re

import pytest

from lmscale.config import apply_overrides, load_config_file
from lmscale.parallel.mesh import make_mesh
from lmscale.parallel.topology import parse_target, topology_devices
from lmscale.plan.recipe import model_config, recipe_for
from lmscale.train.step import build_sharded_step

pytest.importorskip("libtpu", reason="compiling for TPU topologies needs libtpu "
                    "(pip install -e '.[test]' installs it)")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def compiled_train_hlo(*overrides: str) -> str:
    """gpt2-tiny's pretraining step (bf16, 256 tokens, 2 layers) for a v5e-4 split 2 x 2
    over fsdp and tensor, compiled; its HLO text."""
    config = load_config_file(os.path.join(REPO, "configs", "gpt2_tiny.py"))
    apply_overrides(config, ["model.compute_dtype=bfloat16", "model.max_len=256",
                             "data.seq_len=256", "model.num_layers=2", "mesh.data=1",
                             "mesh.fsdp=2", "mesh.tensor=2", *overrides])
    mesh = make_mesh(config.mesh.to_dict(), topology_devices(parse_target("v5e-4")))
    recipe = recipe_for("pretrain", model_config(config, mesh.shape["tensor"]), config)
    step = build_sharded_step(recipe.objective, recipe.optimizer, recipe.schedule, mesh,
                              recipe.phases[0].batch, 1, recipe.seed)
    return step.lower_train().compile().as_text()


def test_auto_compiles_splash_into_a_tpu_train_step():
    hlo = compiled_train_hlo()
    calls = re.findall(r'custom_call_target="tpu_custom_call"', hlo)
    # The forward kernel and the backward pass's dq and dkv kernels (layers are scanned:
    # each appears once in the loop body).
    kernels = set(re.findall(r"splash_mha_(fwd|dq|dkv)", hlo))
    assert calls and kernels == {"fwd", "dq", "dkv"}, kernels
