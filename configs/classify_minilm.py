"""all-MiniLM-L6-v2 on SST-2 sentence sentiment (GLUE), BERT 4.1's recipe scaled to CPU.

Convert first: lmscale convert hf --model-dir ../shared/data/models/all-MiniLM-L6-v2 \
    --out runs/minilm
"""

from lmscale.tasks.classify import classify_template


def get_config():
    c = classify_template()
    c.init.checkpoint = "runs/minilm"
    c.task.max_seq_length = 64  # SST-2 sentences are short (the longest ~60 WordPieces)
    c.train.epochs = 3.0
    c.train.batch_size = 32
    c.optimizer.learning_rate = 5e-5
    return c
