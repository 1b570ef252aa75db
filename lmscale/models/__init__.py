"""Pure Flax models; they know nothing of meshes, data or training."""

from lmscale.models.bert import BertForPretraining, BertModel
from lmscale.models.config import PRESETS, ModelConfig, preset
from lmscale.models.gpt import GPT

__all__ = ["GPT", "BertModel", "BertForPretraining", "ModelConfig", "PRESETS", "preset"]
