"""A 1M-parameter BERT for CPU: masked LM + next-sentence prediction in minutes."""

from lmscale.train.defaults import pretrain_config


def get_config():
    c = pretrain_config("bert-tiny", dropout=0.0)
    c.data.seq_len = 128
    c.data.dupe_factor = 2
    c.train.steps = 400
    c.train.batch_size = 32
    c.train.eval_every = 100
    c.train.checkpoint_every = 100
    c.optimizer.learning_rate = 2e-3
    c.optimizer.warmup_steps = 40
    return c
