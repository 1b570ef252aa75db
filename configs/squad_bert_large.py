"""BERT-Large on SQuAD v1.1: the setup behind the BERT paper's "around 30 minutes on a
single Cloud TPU" to dev F1 90.9 (google-research/bert README, run_squad.py for BERT-Large:
train_batch_size 24, learning_rate 3e-5, 2 epochs, max_seq_length 384, doc_stride 128).

Point init.checkpoint at a converted checkpoint (`lmscale convert hf`) or an lmscale
pretraining run of the bert-large preset. `lmscale plan --config configs/squad_bert_large.py
--target v3-8` compiles its step for a TPU; benchmarks/squad_timing.py turns that into a
2-epoch estimate.
"""

from lmscale.tasks.squad import squad_template


def get_config():
    c = squad_template("bert-large")
    c.init.checkpoint = "runs/bert-large-uncased"
    c.train.epochs = 2.0
    c.train.batch_size = 24
    c.optimizer.learning_rate = 3e-5
    c.model.compute_dtype = "bfloat16"  # accelerators; float32 accumulation
    return c
