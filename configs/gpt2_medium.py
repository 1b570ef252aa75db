"""GPT-2 medium (`gpt2-medium` preset) with the GPT-2 paper's context 1,024 and batch 512 sequences,
trained on 512 x 1,024 tokens per step; the schedule follows nanoGPT's reproduction
(AdamW, lr warmup 2,000 steps, cosine decay to 10% over 600k steps)."""

from lmscale.train.defaults import pretrain_config


def get_config():
    c = pretrain_config("gpt2-medium", compute_dtype="bfloat16", remat_policy="dots_no_batch")
    # OpenWebText is not in the TFDS catalog; C4 is the nearest web corpus there.
    c.data.sources = ["tfds:c4/en:train"]
    # A GPT-2 BPE directory (vocab.json + merges.txt) keeps GPT-2's 50,257-token vocabulary.
    c.data.tokenizer = ""
    c.data.seq_len = 1024
    c.train.steps = 600_000
    c.train.batch_size = 512
    c.train.eval_every = 1000
    c.train.checkpoint_every = 1000
    c.mesh.data = 1
    c.mesh.fsdp = -1
    return c
