"""A 1.3M-parameter GPT-2 for CPU: minutes on 2 cores. The default corpus is the Python
standard library's docstrings (no download); point data.sources at your own text."""

from lmscale.train.defaults import pretrain_config


def get_config():
    c = pretrain_config("gpt2-tiny", dropout=0.0)
    c.data.seq_len = 128
    c.train.steps = 300
    c.train.batch_size = 16
    c.train.eval_every = 100
    c.train.checkpoint_every = 100
    c.optimizer.learning_rate = 2e-3
    c.optimizer.warmup_steps = 30
    return c
