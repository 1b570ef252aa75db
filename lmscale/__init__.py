"""lmscale: BERT and GPT-2 pretraining, fine-tuning, evaluation and scaling laws in JAX."""

__version__ = "0.1.0"
