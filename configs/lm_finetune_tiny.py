"""Prompt/completion fine-tuning of a small GPT (e.g. the gpt2_tiny.py pretraining run).

    lmscale finetune lm --config configs/lm_finetune_tiny.py \
        --config.init.checkpoint=runs/gpt2_tiny \
        --config.task.train_data=pairs_train.jsonl --config.task.eval_data=pairs_eval.jsonl
"""

from lmscale.tasks.lm_finetune import lm_finetune_template


def get_config():
    c = lm_finetune_template("gpt2-tiny")
    c.model.dropout = 0.0
    c.task.seq_len = 64
    c.train.epochs = 1.0
    c.train.batch_size = 16
    c.train.log_every = 20
    c.optimizer.learning_rate = 5e-4
    c.optimizer.weight_decay = 0.0
    return c
