"""BERT-Large (340M) pretrained as in the BERT paper; see `bert_paper_recipe`."""

from lmscale.train.defaults import bert_paper_recipe


def get_config():
    return bert_paper_recipe("bert-large")
