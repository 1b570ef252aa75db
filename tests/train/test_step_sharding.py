"""One tiny model and batch give the same loss and gradients on every mesh shape, and
parameters are really split as the logical-axis rules say."""

import re

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from lmscale.data.loader import ArrayExamples, StepBatches
from lmscale.models import GPT, BertForPretraining, ModelConfig, preset
from lmscale.parallel.mesh import logical_to_sharding, make_mesh, mesh_context
from lmscale.train.bench import synthetic_batch
from lmscale.train.loop import evaluate
from lmscale.train.objectives import BertPretrainingObjective, CausalLMObjective
from lmscale.train.optimizer import OptimizerConfig, make_optimizer, make_schedule
from lmscale.train.step import build_sharded_step, make_train_step, updates_by_branch

MESHES = [(1, 1, 1), (8, 1, 1), (2, 2, 2), (1, 2, 4)]


def tiny(family: str) -> ModelConfig:
    name = "gpt2-tiny" if family == "gpt" else "bert-tiny"
    return ModelConfig.from_dict(preset(name, vocab_size=128, max_len=16, d_model=32,
                                        num_heads=4, d_ff=64, num_layers=2, dropout=0.0))


def objective(cfg: ModelConfig):
    if cfg.family == "gpt":
        return CausalLMObjective(GPT(cfg))
    return BertPretrainingObjective(BertForPretraining(cfg))


def mesh_of(shape):
    return make_mesh(dict(zip(("data", "fsdp", "tensor"), shape)),
                     jax.devices()[: int(np.prod(shape))])


def loss_and_grads(obj, batch, shape):
    """Loss and gradients with parameters laid out by the rules on `shape`."""
    mesh = mesh_of(shape)
    with mesh_context(mesh):
        boxed = obj.init(jax.random.key(0), batch)
        shardings = logical_to_sharding(nn.get_partition_spec(boxed), mesh)
        params = jax.device_put(nn.unbox(boxed), shardings)

        def loss_fn(p):
            sums, counts = obj.term_sums(p, batch, None), obj.term_counts(batch)
            return sum(sums[t] / counts[t] for t in obj.loss_terms)

        loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
    return float(loss), jax.device_get(grads), params


# BERT's run (about 40 s) is in `-m slow`: its encoder layers are GPT's, and its sharded
# heads and evaluation are covered by the partial-batch evaluation test below.
@pytest.mark.parametrize("family", ["gpt", pytest.param("bert", marks=pytest.mark.slow)])
def test_loss_and_gradients_agree_across_meshes(family):
    cfg = tiny(family)
    obj = objective(cfg)
    batch = synthetic_batch(cfg, 8, 16, 3)
    ref_loss, ref_grads, _ = loss_and_grads(obj, batch, MESHES[0])
    for shape in MESHES[1:]:
        loss, grads, _ = loss_and_grads(obj, batch, shape)
        assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss), shape
        flat, ref_flat = flatten(grads), flatten(ref_grads)
        # Relative error of the whole gradient; per leaf, an absolute floor covers leaves
        # whose true gradient is zero (a key bias cannot change softmax attention).
        assert np.linalg.norm(flat - ref_flat) < 1e-5 * np.linalg.norm(ref_flat), shape
        for g, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
            np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-6)


def flatten(tree) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def test_parameters_are_split_as_the_rules_say():
    cfg = tiny("gpt")
    _, _, params = loss_and_grads(objective(cfg), synthetic_batch(cfg, 8, 16, 3), (2, 2, 2))
    p = params["params"]
    # [layers, embed, mlp]: embed over fsdp (2), mlp over tensor (2), layers whole.
    up = p["blocks"]["mlp"]["up"]["kernel"]
    assert up.shape == (2, 32, 64)
    assert up.sharding.shard_shape(up.shape) == (2, 16, 32)
    # [layers, embed, heads, kv]: heads over tensor.
    q = p["blocks"]["attn"]["query"]["kernel"]
    assert q.sharding.shard_shape(q.shape) == (2, 16, 2, 8)
    # [vocab, embed]: vocab over tensor, embed over fsdp.
    wte = p["wte"]["embedding"]
    assert wte.sharding.shard_shape(wte.shape) == (64, 16)
    # LayerNorm scale [layers, embed]: embed over fsdp.
    ln = p["blocks"]["ln_attn"]["norm"]["scale"]
    assert ln.sharding.shard_shape(ln.shape) == (2, 16)
    # Pure tensor parallelism on (1, 1, 8): embed stays whole, heads split 4 ways... of 4.
    _, _, params = loss_and_grads(objective(cfg), synthetic_batch(cfg, 8, 16, 3), (1, 2, 4))
    q = params["params"]["blocks"]["attn"]["query"]["kernel"]
    assert q.sharding.shard_shape(q.shape) == (2, 16, 1, 8)


def test_gradient_accumulation_equals_the_full_batch_step():
    cfg = tiny("bert")
    obj = objective(cfg)
    batch = synthetic_batch(cfg, 8, 16, 3)
    # Plain SGD, so that the parameter change is the gradient itself (Adam's first step
    # divides by |g| and would amplify rounding in near-zero gradients).
    results = []
    for accum in (1, 4):
        step = build_sharded_step(obj, optax.sgd(0.1), optax.constant_schedule(0.1),
                                  mesh_of((2, 2, 2)), batch, grad_accum_steps=accum)
        state = step.init(jax.random.key(0))
        state, metrics = step.train(state, step.global_batch(batch))
        results.append((float(metrics["loss"]), jax.device_get(state.params)))
    assert abs(results[0][0] - results[1][0]) < 1e-5 * results[0][0]
    for a, b in zip(jax.tree.leaves(results[0][1]), jax.tree.leaves(results[1][1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def adamw_steps(obj, batch):
    """The AdamW step as users run it, sharded over 8 devices (on a CPU it keeps its last
    good state by a conditional), the same step keeping it by a select instead (what TPUs
    run), and a first state."""
    opt_cfg = OptimizerConfig(1e-2, 0, "constant")
    optimizer, schedule = make_optimizer(opt_cfg, 10), make_schedule(opt_cfg, 10)
    sharded = build_sharded_step(obj, optimizer, schedule, mesh_of((8, 1, 1)), batch)
    select = jax.jit(make_train_step(obj, optimizer, schedule, 1, 0, branch_on_finite=False),
                     donate_argnums=0)
    return sharded, select, sharded.init(jax.random.key(0))


@pytest.mark.parametrize("form", ["branch", "select"])
def test_non_finite_loss_keeps_the_last_good_state(form):
    cfg = tiny("gpt")
    obj = objective(cfg)
    batch = synthetic_batch(cfg, 8, 16, 3)
    sharded, select, state = adamw_steps(obj, batch)
    train = sharded.train if form == "branch" else select
    before = jax.device_get(state)
    bad = dict(batch, loss_mask=np.full_like(batch["loss_mask"], np.nan))
    state, metrics = train(state, bad)
    assert not bool(metrics["finite"])
    assert int(state.step) == 0
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state))):
        np.testing.assert_array_equal(a, b)
    state, metrics = train(state, batch)  # and a good batch still trains
    assert bool(metrics["finite"]) and int(state.step) == 1


def test_cpu_steps_branch_and_copy_no_adam_moments():
    """Why the CPU step keeps its last good state by a conditional (`updates_by_branch`):
    under a select, XLA:CPU copies Adam's moments whole before updating them in place."""
    cfg = tiny("gpt")
    obj = objective(cfg)
    batch = synthetic_batch(cfg, 8, 16, 3)
    assert updates_by_branch(mesh_of((8, 1, 1)))
    sharded, select, state = adamw_steps(obj, batch)

    def copies_of_inputs(lowered) -> int:
        """Copies the compiled program makes of its own inputs (the state it updates)."""
        text = lowered.compile().as_text()
        entry = text[text.index("\nENTRY"):]
        inputs = set(re.findall(r"%(\S+) = \S+ parameter\(\d+\)", entry))
        return sum(name in inputs for name in re.findall(r"copy\(%([^)\s,]+)\)", entry))

    assert copies_of_inputs(sharded.lower_train()) == 0
    assert copies_of_inputs(select.lower(state, batch)) > 0


@pytest.mark.parametrize("family", ["gpt", "bert"])
def test_evaluation_counts_each_example_once_when_the_last_batch_is_partial(family):
    """10 examples in batches of 8: the second batch wraps around to examples 0-5, which
    must not count again. The averages equal one pass over the 10 examples."""
    cfg = tiny(family)
    obj = objective(cfg)
    examples = synthetic_batch(cfg, 10, 16, 3)
    step = build_sharded_step(obj, optax.sgd(0.1), optax.constant_schedule(0.1),
                              mesh_of((2, 2, 2)), synthetic_batch(cfg, 8, 16, 3))
    params = step.init(jax.random.key(0)).params
    batches = StepBatches(ArrayExamples(examples), 8, seed=0, shuffle=False)
    metrics = evaluate(step, params, batches, num_batches=100, loss_terms=obj.loss_terms)

    host_params = jax.device_get(params)
    sums, counts = obj.term_sums(host_params, examples, None), obj.term_counts(examples)
    for term in sums:
        expected = float(sums[term]) / float(counts[term])
        assert metrics[f"eval_{term}"] == pytest.approx(expected, rel=1e-5), term
