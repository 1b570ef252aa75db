"""BERT-Base on SQuAD v1.1, the paper's setup (BERT 4.2; google-research/bert README:
dev F1 88.5 after 2 epochs at lr 3e-5, batch 32, max_seq_length 384, doc_stride 128).

Point init.checkpoint at a converted checkpoint (`lmscale convert hf`) or an lmscale
pretraining run of the bert-base preset.
"""

from lmscale.tasks.squad import squad_template


def get_config():
    c = squad_template("bert-base")
    c.init.checkpoint = "runs/bert-base-uncased"
    c.train.epochs = 2.0
    c.train.batch_size = 32
    c.optimizer.learning_rate = 3e-5
    c.model.compute_dtype = "bfloat16"  # accelerators; float32 accumulation
    return c
