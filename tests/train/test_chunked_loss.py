"""GPT's next-token loss computed `model.loss_chunk` positions at a time equals the loss
over the whole logits, in value and in every parameter's gradient, on one device and on
sharded meshes, and never holds the whole [batch, length, vocab] logits."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmscale.errors import ConfigError
from lmscale.models import GPT, ModelConfig, preset
from lmscale.parallel.mesh import logical_to_sharding, make_mesh, mesh_context
from lmscale.train.bench import synthetic_batch
from lmscale.train.objectives import CausalLMObjective
from lmscale.train.step import build_sharded_step

# 300 tokens: padded to 384 columns, so the masked padding is inside every chunk.
VOCAB, LENGTH, ROWS = 300, 16, 8


def gpt(loss_chunk: int = 0) -> ModelConfig:
    return ModelConfig.from_dict(preset("gpt2-tiny", vocab_size=VOCAB, max_len=LENGTH,
                                        d_model=32, num_heads=4, d_ff=64, num_layers=2,
                                        dropout=0.0, loss_chunk=loss_chunk))


def masked_batch() -> dict[str, np.ndarray]:
    """A GPT batch whose loss mask has zeros (prompt positions, padding at row ends) and
    whose rows carry evaluation's `example_weight`, one of them 0."""
    batch = synthetic_batch(gpt(), ROWS, LENGTH, 0)
    mask = np.ones((ROWS, LENGTH), np.float32)
    mask[:, :3] = 0  # prompt
    mask[1, 11:] = 0  # a short row's padding
    mask[5, :] = 0
    weight = np.ones(ROWS, np.float32)
    weight[6] = 0
    return batch | {"loss_mask": mask, "example_weight": weight}


def sums_and_grads(cfg: ModelConfig, batch, params, mesh_shape=None):
    """(lm_loss sum, lm_accuracy sum, mean-loss gradients) for `params`, laid out on
    `mesh_shape` (data, fsdp, tensor) by the logical-axis rules when one is given."""
    obj = CausalLMObjective(GPT(cfg))

    def loss_fn(p):
        sums = obj.term_sums(p, batch, None)
        return sums["lm_loss"] / obj.term_counts(batch)["lm_loss"], sums

    if mesh_shape is None:
        (_, sums), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
        return float(sums["lm_loss"]), float(sums["lm_accuracy"]), jax.device_get(grads)
    mesh = make_mesh(dict(zip(("data", "fsdp", "tensor"), mesh_shape)),
                     jax.devices()[: int(np.prod(mesh_shape))])
    with mesh_context(mesh):
        boxed = obj.init(jax.random.key(0), batch)
        shardings = logical_to_sharding(nn.get_partition_spec(boxed), mesh)
        placed = jax.device_put(params, shardings)
        (_, sums), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(placed)
    return float(sums["lm_loss"]), float(sums["lm_accuracy"]), jax.device_get(grads)


@pytest.fixture(scope="module")
def reference():
    """The whole-logits loss sums and gradients, on one device."""
    cfg, batch = gpt(), masked_batch()
    params = nn.unbox(CausalLMObjective(GPT(cfg)).init(jax.random.key(0), batch))
    # Every other target is the model's own prediction, so the accuracy sum is not 0.
    predicted = np.asarray(jnp.argmax(GPT(cfg).apply(params, batch["input_ids"]), -1))
    batch["targets"] = targets = batch["targets"].copy()  # a view of input_ids' array
    targets[:, ::2] = predicted[:, ::2]
    return batch, jax.device_get(params), sums_and_grads(cfg, batch, params)


def max_difference(grads, ref_grads) -> float:
    return max(float(np.max(np.abs(a - b)))
               for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)))


def assert_same(result, ref):
    loss, correct, grads = result
    ref_loss, ref_correct, ref_grads = ref
    assert ref_loss > 100 and ref_correct > 10  # 73 weighted positions, 34 predicted
    assert abs(loss - ref_loss) <= 1e-5 * ref_loss
    assert correct == ref_correct
    assert jax.tree.structure(grads) == jax.tree.structure(ref_grads)
    assert max_difference(grads, ref_grads) < 1e-5


# 4 divides the 16 positions; 5 and 7 leave a short last chunk; 1 is one position a chunk.
@pytest.mark.parametrize("chunk", [1, 4, 5, 7])
def test_chunked_loss_and_gradients_equal_the_whole_logits(reference, chunk):
    batch, params, ref = reference
    assert_same(sums_and_grads(gpt(chunk), batch, params), ref)


# (2, 2, 2): batch over data x fsdp, table split over fsdp and tensor (384 / 2 columns);
# (1, 8, 1): pure FSDP, the layout of the GPT-2 recipes.
@pytest.mark.parametrize("mesh_shape", [(2, 2, 2), (1, 8, 1)])
def test_chunked_loss_and_gradients_agree_on_a_sharded_mesh(reference, mesh_shape):
    batch, params, ref = reference
    assert_same(sums_and_grads(gpt(5), batch, params, mesh_shape), ref)


def test_a_chunk_as_long_as_the_rows_is_the_whole_logits(reference):
    batch, params, ref = reference
    assert_same(sums_and_grads(gpt(LENGTH), batch, params), ref)


def test_the_sharded_train_step_with_accumulation_takes_the_same_step():
    """The compiled train step (FSDP x tensor mesh, 2 micro-batches) gives the same loss,
    accuracy and updated parameters with and without chunking."""
    batch = masked_batch()
    del batch["example_weight"]
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices()[:8])
    results = []
    for chunk in (0, 6):
        step = build_sharded_step(CausalLMObjective(GPT(gpt(chunk))), optax.sgd(1.0),
                                  optax.constant_schedule(1.0), mesh, batch,
                                  grad_accum_steps=2)
        state = step.init(jax.random.key(0))
        state, metrics = step.train(state, step.global_batch(batch))
        results.append((jax.device_get(metrics), jax.device_get(state.params)))
    (metrics, params), (chunked_metrics, chunked_params) = results
    assert chunked_metrics["loss"] == pytest.approx(metrics["loss"], rel=1e-5)
    assert chunked_metrics["lm_accuracy"] == pytest.approx(metrics["lm_accuracy"], abs=1e-7)
    assert max_difference(chunked_params, params) < 1e-5


def test_the_whole_logits_are_never_materialised():
    """The compiled gradient's temporaries hold less than one whole float32 logits array
    with chunking, and several without."""
    # A vocabulary large against the length, so that the logits, not attention, dominate.
    cfg = dataclasses.replace(gpt(), vocab_size=16300, max_len=64)
    batch = synthetic_batch(cfg, 8, 64, 0)
    logits_bytes = 8 * 64 * cfg.padded_vocab_size * 4  # 32 MiB

    def temp_bytes(loss_chunk: int) -> int:
        obj = CausalLMObjective(GPT(dataclasses.replace(cfg, loss_chunk=loss_chunk)))
        params = jax.eval_shape(lambda: nn.unbox(obj.init(jax.random.key(0), batch)))
        grad = jax.grad(lambda p: obj.term_sums(p, batch, None)["lm_loss"])
        compiled = jax.jit(grad).lower(params).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    whole, chunked = temp_bytes(0), temp_bytes(8)  # chunks of 8 positions: 4 MiB logits
    assert whole > 3 * logits_bytes  # logits, probabilities, their gradient (~106 MB)
    assert chunked < 0.6 * logits_bytes  # a few chunks' worth (~18 MB)


def test_loss_chunk_is_validated():
    with pytest.raises(ConfigError, match="loss_chunk must be >= 0"):
        gpt(-1)
    with pytest.raises(ConfigError, match="applies to GPT"):
        ModelConfig.from_dict(preset("bert-tiny", loss_chunk=64))


def test_return_hidden_gives_the_logits_through_tied_logits(reference):
    from lmscale.models.gpt import tied_logits

    batch, params, _ = reference
    cfg, ids = gpt(), jnp.asarray(batch["input_ids"])
    logits = GPT(cfg).apply(params, ids)
    hidden, table = GPT(cfg).apply(params, ids, return_hidden=True)
    assert hidden.shape == (ROWS, LENGTH, 32) and table.shape == (384, 32)
    np.testing.assert_array_equal(tied_logits(hidden, table, cfg), logits)
