"""Hugging Face Flax peer: transformers 4.57.6's `FlaxGPT2LMHeadModel` (causal-LM loss) or
`FlaxBertForPreTraining` (MLM + NSP) trained by optax AdamW in one `jax.jit` step with the
parameters and optimizer state donated, on the same jax/flax/optax as lmscale. Prints one
JSON line. Runs in the peer virtual environment that `benchmarks/cpu_side_by_side.py`
creates (transformers 5 dropped the Flax models and 4.57.6 refuses lmscale's tokenizers).

bfloat16 is mixed precision as Hugging Face Flax does it: `dtype=jnp.bfloat16` computes in
bf16 while the parameters (and so the optimizer state) stay float32; losses are float32.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import optax
import transformers

from step_timing import emit, hf_config, parse_step_args, peer_batch, time_steps


def hf_model(args):
    cls = (transformers.FlaxGPT2LMHeadModel if args.family == "gpt"
           else transformers.FlaxBertForPreTraining)
    return cls(hf_config(args), input_shape=(1, args.seq), seed=args.seed,
               dtype=jnp.dtype(args.dtype))


def loss_fn(model, family: str):
    xent = optax.softmax_cross_entropy_with_integer_labels

    def loss(params, batch):
        if family == "gpt":  # logits at every position, loss on the next token (HF's shift)
            logits = model(batch["input_ids"], params=params, train=False).logits
            return xent(logits[:, :-1].astype(jnp.float32), batch["input_ids"][:, 1:]).mean()
        out = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"], params=params, train=False)
        # prediction_logits: [batch, seq, vocab], every position; the loss keeps the masked.
        weights = batch["mlm_weights"]
        mlm = xent(out.prediction_logits.astype(jnp.float32), batch["mlm_labels"])
        nsp = xent(out.seq_relationship_logits.astype(jnp.float32),
                   batch["next_sentence_label"])
        return (mlm * weights).sum() / weights.sum() + nsp.mean()
    return loss


def main(argv=None) -> None:
    args = parse_step_args(__doc__.splitlines()[0], argv)
    model = hf_model(args)
    adamw = optax.adamw(args.learning_rate, b1=0.9, b2=0.999, eps=1e-8,
                        weight_decay=args.weight_decay)
    optimizer = (optax.chain(optax.clip_by_global_norm(args.clip_norm), adamw)
                 if args.clip_norm else adamw)
    loss = loss_fn(model, args.family)

    def train_step(params, opt_state, batch):
        value, grads = jax.value_and_grad(loss)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    train = jax.jit(train_step, donate_argnums=(0, 1))
    params = model.params  # float32 whatever the compute dtype
    state = {"params": params, "opt": optimizer.init(params)}
    batch = {k: jnp.asarray(v) for k, v in peer_batch(args).items()}

    def step():
        state["params"], state["opt"], value = train(state["params"], state["opt"], batch)
        jax.block_until_ready((state["params"], state["opt"], value))

    timing = time_steps(step, args.steps, args.warmup, args.interleave)
    emit(args, "hf-flax", timing,
         versions={"jax": jax.__version__, "flax": flax.__version__,
                   "optax": optax.__version__, "transformers": transformers.__version__})


if __name__ == "__main__":
    main()
