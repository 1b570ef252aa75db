"""The SQuAD window count behind every 2-epoch time: the dev set's windows per question,
recounted with lmscale's featurizer and BERT's uncased WordPiece (all-MiniLM-L6-v2's)."""

import os
import sys

import pytest

from lmscale.data.load_tokenizer import load_tokenizer
from lmscale.data.squad import build_squad_features, read_squad_file, squad_examples

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import squad_stats  # noqa: E402

DATA = os.path.join(ROOT, "..", "shared", "data")
DEV = os.path.join(DATA, "squad", "dev-v1.1.json")
VOCAB = os.path.join(DATA, "models", "all-MiniLM-L6-v2")


@pytest.mark.skipif(not (os.path.exists(DEV) and os.path.isdir(VOCAB)),
                    reason="needs ../shared/data (SQuAD dev and the MiniLM vocabulary)")
def test_dev_windows_per_question_at_384_and_stride_128():
    examples, _ = squad_examples(read_squad_file(DEV).articles)
    features = build_squad_features(examples, load_tokenizer(VOCAB), max_seq_length=384,
                                    doc_stride=128)
    assert (len(examples), len(features)) == (squad_stats.DEV_QUESTIONS,
                                              squad_stats.DEV_WINDOWS)
    assert squad_stats.TRAIN_WINDOWS == 89_779
