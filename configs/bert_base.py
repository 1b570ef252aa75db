"""BERT-base as pretrained in the BERT paper (section A.2): batch 256 sequences,
1M steps, 90% of them at length 128 and the rest at 512; Adam lr 1e-4 with 10k warmup
and linear decay, weight decay 0.01, dropout 0.1."""

from lmscale.train.defaults import pretrain_config


def get_config():
    c = pretrain_config("bert-base", compute_dtype="bfloat16", remat_policy="dots_no_batch")
    # BooksCorpus is not in the TFDS catalog; add it as local files if you have it.
    c.data.sources = ["tfds:wikipedia/20230601.en:train"]
    c.data.dupe_factor = 10
    c.data.phases = [(0.9, 128, 20), (1.0, 512, 80)]
    c.train.steps = 1_000_000
    c.train.batch_size = 256
    c.train.eval_every = 10_000
    c.train.checkpoint_every = 10_000
    c.mesh.data = 1
    c.mesh.fsdp = -1
    return c
