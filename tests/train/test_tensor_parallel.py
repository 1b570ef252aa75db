"""Tensor parallelism on GPT-2's 50,257-token vocabulary, which no tensor size > 1 divides:
the padded model trains on a (data 4, tensor 2) mesh with the losses of (data 8) and of an
unpadded model, and checkpoints resume when the padding differs (another tensor size)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmscale.models import GPT, ModelConfig, preset
from lmscale.models.vocab import fit_vocab
from lmscale.parallel.mesh import make_mesh
from lmscale.train.bench import synthetic_batch
from lmscale.train.checkpoint import Checkpointer, CheckpointError
from lmscale.train.objectives import CausalLMObjective
from lmscale.train.optimizer import OptimizerConfig, make_optimizer, make_schedule
from lmscale.train.state import TrainState
from lmscale.train.step import build_sharded_step

GPT2_VOCAB = 50_257
OPTIMIZER = OptimizerConfig(learning_rate=1e-3, warmup_steps=0, schedule="constant",
                            weight_decay=0.1)
STEPS = 3


def tiny_gpt(vocab_size: int, num_heads: int = 2) -> ModelConfig:
    return ModelConfig.from_dict(preset("gpt2", vocab_size=vocab_size, max_len=32, d_model=64,
                                        num_layers=2, num_heads=num_heads, d_ff=256,
                                        dropout=0.0))


def sharded_step(cfg: ModelConfig, mesh_sizes: dict, batch):
    optimizer = make_optimizer(OPTIMIZER, STEPS)
    return build_sharded_step(CausalLMObjective(GPT(cfg)), optimizer,
                              make_schedule(OPTIMIZER, STEPS), make_mesh(mesh_sizes), batch)


def start_state(step, params, cfg: ModelConfig) -> TrainState:
    """Step 0 with `params` (vocabulary fitted to `cfg`) laid out as `step` wants."""
    optimizer = make_optimizer(OPTIMIZER, STEPS)
    params = fit_vocab(params, cfg)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       opt_state=optimizer.init(params))
    return jax.device_put(state, step.state_shardings)


def losses_and_params(cfg, mesh_sizes, params, batch):
    step = sharded_step(cfg, mesh_sizes, batch)
    state = start_state(step, params, cfg)
    losses = []
    for _ in range(STEPS):
        state, metrics = step.train(state, step.global_batch(batch))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.params)


def test_tensor_2_on_the_gpt2_vocabulary_trains_like_tensor_1_and_unpadded():
    plain = dataclasses.replace(tiny_gpt(GPT2_VOCAB), vocab_multiple=1)
    batch = synthetic_batch(plain, 8, 32, 1)
    # One set of starting values for every run: the unpadded model's, zero-padded.
    params = jax.device_get(sharded_step(plain, {"data": 8}, batch).init(jax.random.key(0))
                            .params)
    reference, _ = losses_and_params(plain, {"data": 8}, params, batch)
    one = plain.for_tensor_parallel(1)
    two = plain.for_tensor_parallel(2)
    assert (one.padded_vocab_size, two.padded_vocab_size) == (50_304, 50_432)
    tensor_1, _ = losses_and_params(one, {"data": 8}, params, batch)
    tensor_2, trained = losses_and_params(two, {"data": 4, "tensor": 2}, params, batch)
    assert reference[-1] < reference[0]  # it learns
    np.testing.assert_allclose(tensor_1, reference, rtol=1e-5)
    np.testing.assert_allclose(tensor_2, reference, rtol=1e-5)
    table = trained["params"]["wte"]["embedding"]
    assert table.shape == (50_432, 64)
    assert np.all(table[GPT2_VOCAB:] == 0)  # no gradient reaches the padding rows


VOCAB = 1100  # 1,152 rows at tensor 1, 1,536 at tensor 4
MESHES = {1: {"data": 8}, 4: {"data": 2, "tensor": 4}}


def small_gpt(vocab_size: int = VOCAB) -> ModelConfig:
    return tiny_gpt(vocab_size, num_heads=4)  # 4 heads, so that tensor 4 divides them


def trained_state(tensor: int):
    """A run at `tensor` after one step: (sharded step, state, batch)."""
    cfg = small_gpt().for_tensor_parallel(tensor)
    batch = synthetic_batch(cfg, 8, 32, 1)
    step = sharded_step(cfg, MESHES[tensor], batch)
    state, _ = step.train(step.init(jax.random.key(0)), step.global_batch(batch))
    return step, state, batch


def save(state, directory, config: dict) -> None:
    checkpointer = Checkpointer(str(directory), async_save=False)
    checkpointer.save(state, config, force=True)
    checkpointer.close()


@pytest.mark.parametrize("saved_at, resumed_at", [(1, 4), (4, 1)])
def test_a_checkpoint_resumes_at_another_tensor_size(tmp_path, saved_at, resumed_at):
    step, state, batch = trained_state(saved_at)
    saved = jax.device_get(state)
    save(state, tmp_path, {"model": {"vocab_size": VOCAB}})
    _, expected = step.train(state, step.global_batch(batch))

    cfg = small_gpt().for_tensor_parallel(resumed_at)
    other = sharded_step(cfg, MESHES[resumed_at], batch)
    restored = Checkpointer(str(tmp_path)).restore(other.abstract_state, other.state_shardings,
                                                   vocab_size=VOCAB)
    assert int(restored.step) == 1
    rows = cfg.padded_vocab_size
    got = jax.device_get(restored)
    for tree_saved, tree_got in [(saved.params, got.params),
                                 (saved.opt_state[1][0].mu, got.opt_state[1][0].mu)]:
        table = tree_got["params"]["wte"]["embedding"]
        old = tree_saved["params"]["wte"]["embedding"]
        assert table.shape == (rows, 64)
        np.testing.assert_array_equal(table[:VOCAB], old[:VOCAB])
        if rows > old.shape[0]:
            assert np.all(table[old.shape[0]:] == 0)  # zero rows appended
        np.testing.assert_array_equal(tree_got["params"]["wpe"]["embedding"],
                                      tree_saved["params"]["wpe"]["embedding"])
    _, metrics = other.train(restored, other.global_batch(batch))
    assert float(metrics["loss"]) == pytest.approx(float(expected["loss"]), rel=1e-5)


def test_only_the_vocabulary_padding_may_differ(tmp_path):
    _, state, batch = trained_state(1)
    save(state, tmp_path / "with_config", {"model": {"vocab_size": VOCAB}})
    save(state, tmp_path / "without_config", {})

    def restore(directory, cfg, tensor, **kw):
        other = sharded_step(cfg, MESHES[tensor], batch)
        return Checkpointer(str(directory)).restore(other.abstract_state,
                                                    other.state_shardings, **kw)

    # Another width: refused with the shapes, as before padding existed.
    wider = dataclasses.replace(small_gpt(), d_model=128).for_tensor_parallel(4)
    with pytest.raises(CheckpointError, match=r"(?s)different model config.*"
                       r"attn/out/bias: checkpoint \(2, 64\) vs model \(2, 128\)"):
        restore(tmp_path / "with_config", wider, 4)
    # Another vocabulary whose padded table happens to be as large: refused by name.
    with pytest.raises(CheckpointError, match="model.vocab_size: checkpoint 1100 vs model 1030"):
        restore(tmp_path / "with_config", small_gpt(1030), 1, vocab_size=1030)
    # Rows that would cut real tokens: the checkpoint's 1,100 do not fit in 1,000 rows.
    with pytest.raises(CheckpointError, match=r"wte/embedding: checkpoint \(1152, 64\) vs "
                                              r"model \(1000, 64\)"):
        restore(tmp_path / "with_config", dataclasses.replace(small_gpt(1000), vocab_multiple=1),
                1)
    # Without the checkpoint's vocabulary size nothing tells padding from tokens...
    with pytest.raises(CheckpointError, match=r"checkpoint \(1152, 64\) vs model \(1536, 64\)"):
        restore(tmp_path / "without_config", small_gpt().for_tensor_parallel(4), 4)
    # ... unless the caller gives the model's.
    restored = restore(tmp_path / "without_config", small_gpt().for_tensor_parallel(4), 4,
                       vocab_size=VOCAB)
    assert restored.params["params"]["wte"]["embedding"].shape == (1536, 64)
