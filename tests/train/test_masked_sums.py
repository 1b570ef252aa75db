"""`_masked_sums`: cross-entropy and accuracy sums over the weighted positions, the
accuracy read from the softmax's maximum instead of an argmax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmscale.train.objectives import _masked_sums


def test_sums_count_only_weighted_positions_and_match_argmax_accuracy():
    logits = jax.random.normal(jax.random.key(0), (3, 5, 11))
    labels = jax.random.randint(jax.random.key(1), (3, 5), 0, 11)
    labels = labels.at[0, :3].set(jnp.argmax(logits[0, :3], -1))  # some right answers
    weights = jnp.ones((3, 5)).at[2].set(0.0)
    loss, correct = _masked_sums(logits, labels, weights)
    want_loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    want_correct = (jnp.argmax(logits, -1) == labels) * weights
    np.testing.assert_allclose(loss, jnp.sum(want_loss * weights), rtol=1e-6)
    assert float(correct) == float(jnp.sum(want_correct)) >= 3


def test_accuracy_adds_no_gradient():
    logits = jax.random.normal(jax.random.key(2), (4, 7))
    labels = jnp.arange(4)
    grads = jax.grad(lambda x: _masked_sums(x, labels, jnp.ones(4))[1])(logits)
    assert not np.any(np.asarray(grads))
