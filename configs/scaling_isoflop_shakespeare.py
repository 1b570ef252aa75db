"""IsoFLOP profiles of small GPTs on the 5 MB Open Shakespeare plays (Hoffmann et al.'s
approach 2): for each compute budget C, five sizes trained on D = C / 6N tokens.

    lmscale scaling sweep --config configs/scaling_isoflop_shakespeare.py \
        --workdir runs/scaling_isoflop
    lmscale scaling fit --results runs/scaling_isoflop/results.csv --grid coarse

The recipe is configs/scaling_shakespeare.py's (same tokenizer size, context, optimiser)
with batch 8, for more steps per token. Every size is crossed with every budget; points
with under 100 steps or more tokens than one pass over the training split are left out.
Results and discussion: docs/scaling_results.md.
"""

import os
import runpy

HERE = os.path.dirname(os.path.abspath(__file__))
PLAYS = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "text",
                                      "openshakespeare", "*_gut.txt"))


def get_config():
    c = runpy.run_path(os.path.join(HERE, "scaling_shakespeare.py"))["get_config"]()
    c.name = "scaling_isoflop_shakespeare"
    c.base.data.sources = [PLAYS]
    c.base.train.batch_size = 8
    c.base.optimizer.warmup_steps = 10
    # 25K-1.2M non-embedding parameters; 2.6M training tokens are available.
    c.sweep.mode = "isoflop"
    c.sweep.sizes = [(32, 2, 2), (48, 2, 2), (64, 2, 4), (80, 2, 4), (96, 3, 4), (128, 4, 4),
                     (160, 4, 4)]
    c.sweep.tokens = []
    c.sweep.budgets = [1e11, 3e11, 1e12, 3e12]
    c.sweep.min_steps = 100
    c.sweep.max_tokens = 2.6e6
    return c
