"""lmscale's pretraining train step, built as `lmscale bench` builds it
(`lmscale.train.bench.bench_train_step`: the pretraining config of the `gpt2` or
`bert-base` preset, `synthetic_batch`, `objective_for`, the config's AdamW with its clipping,
`build_sharded_step`), timed by `step_timing.time_steps` like the two peers. Prints one JSON
line. Run by `benchmarks/cpu_side_by_side.py`, one process per shape and dtype.
"""

from __future__ import annotations

from lmscale.host_memory import keep_freed_memory

keep_freed_memory()  # as the `lmscale` command does, before JAX starts

import flax
import jax
import optax

from lmscale.models import ModelConfig
from lmscale.parallel.mesh import make_mesh
from lmscale.train.bench import synthetic_batch
from lmscale.train.defaults import pretrain_config
from lmscale.train.objectives import objective_for
from lmscale.train.optimizer import OptimizerConfig, make_optimizer, make_schedule
from lmscale.train.step import build_sharded_step, check_batch_split, model_for_mesh

from step_timing import emit, parse_step_args, time_steps

PRESET_OF_FAMILY = {"gpt": "gpt2", "bert": "bert-base"}


def bench_config(args):
    """`lmscale bench`'s config for this shape: the preset's pretraining config with the
    shape, dtype, batch and clipping overridden, dropout 0, the paper recipes'
    (configs/gpt2_*.py, bert_*.py) rematerialisation policy (`dots_no_batch` saves the
    projections' outputs and recomputes the elementwise work), and the layers unrolled
    (`model.scan_layers=False`), as the peers' are: the same program without the loop,
    whose stacked gradients XLA's CPU backend zero-fills and writes back a layer at a time
    (a gain of a few percent here, within this host's drift; see the README)."""
    config = pretrain_config(
        PRESET_OF_FAMILY[args.family], compute_dtype=args.dtype, dropout=0.0,
        remat_policy="dots_no_batch", scan_layers=False,
        num_layers=args.layers, d_model=args.d_model, num_heads=args.heads, d_ff=args.d_ff,
        vocab_size=args.vocab, max_len=args.max_len)
    config.train.batch_size = args.batch
    config.data.seq_len = args.seq
    config.data.max_predictions_per_seq = args.predictions
    config.optimizer.learning_rate = args.learning_rate
    config.optimizer.weight_decay = args.weight_decay
    config.optimizer.clip_norm = args.clip_norm or None
    return config


def main(argv=None) -> None:
    args = parse_step_args(__doc__.splitlines()[0], argv)
    config = bench_config(args)
    # From here on, bench_train_step's construction line for line.
    model_cfg = ModelConfig.from_dict(config.model.to_dict())
    opt_cfg = OptimizerConfig(**config.optimizer.to_dict())
    mesh = make_mesh(config.mesh.to_dict())
    check_batch_split(args.batch, config.train.grad_accum_steps, mesh)
    model_cfg = model_for_mesh(model_cfg, mesh)
    batch = synthetic_batch(model_cfg, args.batch, args.seq, args.predictions, args.seed)
    sharded = build_sharded_step(objective_for(model_cfg), make_optimizer(opt_cfg, 1000),
                                 make_schedule(opt_cfg, 1000), mesh, batch,
                                 config.train.grad_accum_steps)
    state = {"train": sharded.init(jax.random.key(args.seed))}
    global_batch = sharded.global_batch(batch)

    def step():
        state["train"], metrics = sharded.train(state["train"], global_batch)
        jax.block_until_ready((state["train"], metrics))

    timing = time_steps(step, args.steps, args.warmup, args.interleave)
    emit(args, "lmscale", timing, padded_vocab=model_cfg.padded_vocab_size,
         versions={"jax": jax.__version__, "flax": flax.__version__,
                   "optax": optax.__version__})


if __name__ == "__main__":
    main()
