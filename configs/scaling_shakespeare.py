"""Scaling sweep of small GPTs on Tiny Shakespeare, sized for a shared 2-core CPU.

`lmscale scaling sweep --config configs/scaling_shakespeare.py --workdir runs/scaling_shakespeare`
then `lmscale scaling fit --results runs/scaling_shakespeare/results.csv`.
Results and discussion: docs/scaling_results.md.
"""

import os

import ml_collections

from lmscale.train.defaults import pretrain_config

# ../shared/data next to the repository, wherever the command is run from.
SHAKESPEARE = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "text",
    "tinyshakespeare.txt"))


def get_config():
    # A 512-piece vocabulary keeps the output layer (not counted in N, but paid for in
    # time) small next to the blocks, and the ~580K training tokens at ~2 chars/token.
    base = pretrain_config("gpt2-tiny", dropout=0.0, vocab_size=512, max_len=128)
    base.data.sources = [SHAKESPEARE]
    base.data.document_split = "blank_line"
    base.data.seq_len = 128
    base.data.eval_fraction = 0.05
    # Batch 16 and a peak learning rate of 5e-3 were chosen from two 300K-token trials
    # of the smallest model: batch 32 at 2e-3 ended at 4.60 held-out loss, batch 32 at
    # 1e-2 at 4.05, batch 16 at 6e-3 at 3.88 (more steps per token helps short runs).
    base.train.batch_size = 16
    base.train.log_every = 20
    base.train.eval_every = 0
    base.train.eval_batches = 1000  # the whole held-out split
    base.train.checkpoint_every = 200
    base.train.keep_checkpoints = 1
    base.train.samples = 0
    base.optimizer.learning_rate = 5e-3
    base.optimizer.warmup_steps = 20

    c = ml_collections.ConfigDict()
    c.name = "scaling_shakespeare"
    c.base = base
    # 4 sizes (25K-790K non-embedding parameters) × 4 budgets; `lmscale bench` measured
    # 2-12K tokens/s on the shared 2-core machine, and the sweep took 33 minutes. The
    # 6e5 and 9e5 budgets are 1.03 and 1.54 epochs of the training split (the sweep warns).
    c.sweep = dict(mode="grid", sizes=[(32, 2, 2), (64, 2, 4), (96, 3, 4), (128, 4, 4)],
                   tokens=[1e5, 3e5, 6e5, 9e5], budgets=[])
    return c
