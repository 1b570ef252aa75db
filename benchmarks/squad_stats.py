"""SQuAD v1.1 training-set size in BERT's windows, for turning a step time into an epoch.

SQuAD v1.1 train has 87,599 questions (Rajpurkar et al. 2016; TFDS squad/v1.1). At 384
tokens with stride 128 and BERT's uncased WordPiece, the dev set makes 1.0249 windows per
question (10,833 windows from its 10,570 questions, measured with lmscale's featurizer,
`lmscale.data.squad.build_squad_features`, and the all-MiniLM-L6-v2 vocabulary). The
training file is not available offline, so it is taken to split alike:
87,599 x 10,833 / 10,570 = 89,779 windows. tests/benchmarks/test_squad_stats.py recounts the
dev windows.
"""

TRAIN_QUESTIONS = 87_599
DEV_QUESTIONS, DEV_WINDOWS = 10_570, 10_833
TRAIN_WINDOWS = round(TRAIN_QUESTIONS * DEV_WINDOWS / DEV_QUESTIONS)
EPOCHS = 2  # the BERT paper's and google-research/bert's SQuAD v1.1 recipe
