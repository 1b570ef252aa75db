"""A 0.58M-parameter BERT for CPU: masked LM + next-sentence prediction in minutes.

Small vocabulary (1,024 pieces) and length 64 so that the model gets past the
unigram plateau BERT sits on early in training within ~1,500 steps on 2 cores; with the
default 4,096 pieces at length 128 it was still at the unigram loss after 1,000 steps.
"""

from lmscale.train.defaults import pretrain_config


def get_config():
    c = pretrain_config("bert-tiny", vocab_size=1024, dropout=0.0)
    c.data.seq_len = 64
    c.data.max_predictions_per_seq = 10  # 15% of 64, as BERT uses 20 for 128
    c.data.dupe_factor = 2
    c.train.steps = 1500
    c.train.batch_size = 32
    c.train.eval_every = 250
    c.train.checkpoint_every = 500
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 100
    return c
