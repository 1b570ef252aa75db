"""GPT-2 large (774M) with the GPT-2 paper's context and batch; see `gpt2_paper_recipe`."""

from lmscale.train.defaults import gpt2_paper_recipe


def get_config():
    return gpt2_paper_recipe("gpt2-large")
