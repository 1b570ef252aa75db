"""all-MiniLM-L6-v2 (converted with `lmscale convert hf`) on SQuAD v1.1, BERT's recipe.

Convert first: lmscale convert hf --model-dir ../shared/data/models/all-MiniLM-L6-v2 \
    --out runs/minilm
"""

from lmscale.tasks.squad import squad_template


def get_config():
    c = squad_template()
    c.init.checkpoint = "runs/minilm"
    c.train.epochs = 2.0  # BERT 4.2: 2-3 epochs, batch 32, lr 5e-5 (3e-5 for BERT-Large)
    c.train.batch_size = 32
    c.optimizer.learning_rate = 5e-5
    return c
