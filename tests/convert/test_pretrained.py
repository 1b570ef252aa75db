"""`load_pretrained` on an `lmscale pretrain` run directory, and vocabulary checks."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmscale.convert.pretrained import export_hf, load_pretrained
from lmscale.errors import InputError
from lmscale.models import BertForPretraining
from lmscale.train.checkpoint import Checkpointer
from lmscale.train.state import TrainState


def test_pretrain_run_directory_loads_params_and_exports(tiny_hf_bert, tmp_path):
    import dataclasses

    import flax.linen as nn

    cfg = load_pretrained(tiny_hf_bert).config
    ids = jnp.zeros((1, 4), jnp.int32)
    params = nn.unbox(BertForPretraining(cfg).init(jax.random.key(1), ids, ids, ids, ids))
    run = tmp_path / "run"
    checkpointer = Checkpointer(str(run / "checkpoints"), async_save=False)
    for step in (5, 10):  # the newest step is the one loaded
        scaled = jax.tree.map(lambda x, s=step: x * s, params)
        checkpointer.save(TrainState(step=jnp.asarray(step, jnp.int32), params=scaled,
                                     opt_state=(jnp.zeros(3),)), {}, force=True)
    checkpointer.close()
    (run / "config.json").write_text(json.dumps(
        {"model": dataclasses.asdict(cfg), "data": {"tokenizer": tiny_hf_bert}}))

    loaded = load_pretrained(str(run))
    assert loaded.config == cfg
    for (path, want), got in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                 jax.tree.leaves(loaded.params)):
        np.testing.assert_array_equal(got, np.asarray(want) * 10,
                                      err_msg=jax.tree_util.keystr(path))
    assert export_hf(str(run), str(tmp_path / "hf")) == "BertForPreTraining"
    assert os.path.isfile(tmp_path / "hf" / "vocab.txt")


def test_directory_of_unknown_kind_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="neither an lmscale export"):
        load_pretrained(str(tmp_path))
