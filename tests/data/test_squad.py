import json
import os
import re

import numpy as np
import pytest

from lmscale.data.squad import (
    FEATURE_KEYS,
    SquadExample,
    build_squad_features,
    postprocess_squad_predictions,
    read_squad_file,
    split_articles,
    squad_examples,
)
from lmscale.data.tokenizer import (
    SentencePieceTokenizer,
    TokenizerTrainSpec,
    train_sentencepiece,
)
from lmscale.errors import InputError
from lmscale.tasks.squad_metric import evaluate_squad

# <repo>/../shared/data, read in place.
DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "../../../shared/data"))
DEV_FILE = os.path.join(DATA, "squad", "dev-v1.1.json")
MINILM = os.path.join(DATA, "models", "all-MiniLM-L6-v2")
needs_data = pytest.mark.skipif(not os.path.isfile(DEV_FILE),
                                reason=f"shared data not found at {DATA}")


class WhitespaceTokenizer:
    """One token per white-space separated word: windows and positions are exact."""

    def __init__(self):
        self.pad_id, self.cls_id, self.sep_id, self.mask_id, self.eot_id = 0, 1, 2, 3, None
        self._ids: dict[str, int] = {}
        self.vocab_size = 4

    def _id(self, word: str) -> int:
        if word not in self._ids:
            self._ids[word] = self.vocab_size
            self.vocab_size += 1
        return self._ids[word]

    def encode(self, text):
        return self.encode_with_offsets(text)[0]

    def encode_with_offsets(self, text):
        matches = list(re.finditer(r"\S+", text))
        return [self._id(m.group()) for m in matches], [m.span() for m in matches]

    def decode(self, ids):
        words = {v: k for k, v in self._ids.items()}
        return " ".join(words[i] for i in ids)

    def starts_word(self, token_id):
        return True


def _example(context: str, answer: str, qas_id: str = "q", question: str = "q") -> SquadExample:
    return SquadExample(qas_id=qas_id, question=question, context=context, answers=(answer,),
                        answer_start=context.index(answer))


LONG_CONTEXT = " ".join(f"t{i}" for i in range(300))


def _long_features(**kwargs):
    example = _example(LONG_CONTEXT, "t100 t101")
    features = build_squad_features([example], WhitespaceTokenizer(), max_seq_length=64,
                                    doc_stride=16, max_query_length=8, **kwargs)
    return example, features


def test_long_passage_windows_follow_the_stride():
    _, features = _long_features()
    # 60 context tokens per window (64 - 1 question token - 3 specials); starts 0, 16, ...,
    # 240, where 240 + 60 reaches the end: 16 windows.
    assert len(features) == 16
    doc_offset = 3  # [CLS] q [SEP]
    for k in range(16):
        spans = features.token_char_spans[k]
        words = [LONG_CONTEXT[s:e] for s, e in spans[doc_offset:doc_offset + 60]]
        assert words == [f"t{16 * k + i}" for i in range(60)]
        assert (spans[:doc_offset] == -1).all() and (spans[doc_offset + 60:] == -1).all()
        assert features.arrays["input_ids"][k, doc_offset + 60] == 2  # closing [SEP]
    # Every context token is scored in exactly one window.
    assert features.is_max_context.sum() == 300
    # t100 lies in windows 3..6 (min(left, right) context 7, 23, 20, 4): window 4 wins.
    max_windows = [k for k in range(16)
                   if 0 <= 100 - 16 * k < 60 and features.is_max_context[k, 100 - 16 * k + 3]]
    assert max_windows == [4]


def test_labels_point_at_the_answer_or_cls():
    _, features = _long_features()
    starts, ends = features.arrays["start_positions"], features.arrays["end_positions"]
    # The answer t100..t101 is inside windows 3..6 (tokens 48..107 to 96..155).
    for k in range(16):
        if 3 <= k <= 6:
            assert (starts[k], ends[k]) == (100 - 16 * k + 3, 101 - 16 * k + 3)
        else:
            assert (starts[k], ends[k]) == (0, 0)
    assert features.answers_outside_window == 12


def test_arrays_are_int32_padded_and_typed():
    example = _example("alpha beta gamma", "beta", question="what is it")
    features = build_squad_features([example], WhitespaceTokenizer(), max_seq_length=16,
                                    max_query_length=4)
    arrays = features.arrays
    assert set(arrays) == set(FEATURE_KEYS)
    assert all(a.dtype == np.int32 for a in arrays.values())
    assert arrays["input_ids"].shape == (1, 16) and arrays["start_positions"].shape == (1,)
    # [CLS] what is it [SEP] alpha beta gamma [SEP] + 7 padding
    assert arrays["input_ids"][0, [0, 4, 8]].tolist() == [1, 2, 2]
    assert arrays["input_ids"][0, 9:].tolist() == [0] * 7
    assert arrays["token_type_ids"][0].tolist() == [0] * 5 + [1] * 4 + [0] * 7
    assert arrays["attention_mask"][0].tolist() == [1] * 9 + [0] * 7
    assert (arrays["start_positions"][0], arrays["end_positions"][0]) == (6, 6)


def test_long_question_is_truncated_to_max_query_length_and_counted():
    question = " ".join(f"w{i}" for i in range(100))
    tokenizer = WhitespaceTokenizer()
    examples = [_example("alpha beta", "beta", "long", question),
                _example("alpha beta", "alpha", "short", "w0 w1")]
    features = build_squad_features(examples, tokenizer)
    assert features.truncated_questions == 1
    ids = features.arrays["input_ids"][0]
    assert ids[1:65].tolist() == tokenizer.encode(question)[:64]
    assert ids[65] == tokenizer.sep_id
    assert features.arrays["token_type_ids"][0, :66].tolist() == [0] * 66
    assert features.arrays["token_type_ids"][0, 66:69].tolist() == [1, 1, 1]
    assert features.arrays["start_positions"].tolist() == [67, 4]


def test_too_small_sequence_and_missing_special_tokens_are_input_errors():
    example = _example("alpha beta", "beta")
    with pytest.raises(InputError, match="raise max_seq_length"):
        build_squad_features([example], WhitespaceTokenizer(), max_seq_length=60)
    tokenizer = WhitespaceTokenizer()
    tokenizer.cls_id = None
    with pytest.raises(InputError, match="cls_id"):
        build_squad_features([example], tokenizer)


def test_mismatched_answers_are_counted_and_skipped():
    context = "Paris is the capital of France."
    articles = [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": "ok", "question": "capital?", "answers": [
            {"text": "Paris", "answer_start": 0},
            {"text": "France", "answer_start": 3}]},  # wrong offset: 'France' is at 24
        {"id": "bad", "question": "country?", "answers": [
            {"text": "France", "answer_start": 0}]},
    ]}]}]
    examples, report = squad_examples(articles)
    assert [e.qas_id for e in examples] == ["ok"]
    assert examples[0].answers == ("Paris",) and examples[0].answer_start == 0
    assert (report.questions, report.answers, report.mismatched_answers,
            report.skipped_questions) == (2, 3, 2, 1)
    assert report.mismatched_ids == ["ok", "bad"]
    assert "2 answers whose answer_start does not match" in report.describe()
    assert "1 questions left without an answer skipped (e.g. ok, bad)" in report.describe()


def test_postprocess_picks_the_best_valid_span_across_windows():
    example, features = _long_features()

    def position(window: int, token: int) -> int:
        return token - 16 * window + 3

    start = np.full(features.is_max_context.shape, -100.0)
    end = np.full(features.is_max_context.shape, -100.0)
    start[4, position(4, 100)] = end[4, position(4, 101)] = 10.0  # the answer: score 20
    start[4, 1] = end[4, 0] = 50.0  # the question token and [CLS]: not context
    start[3, position(3, 100)] = end[3, position(3, 101)] = 40.0  # window 3 is not t100's
    start[5, position(5, 105)] = end[5, position(5, 139)] = 30.0  # 35 tokens: too long
    start[6, position(6, 130)] = end[6, position(6, 120)] = 30.0  # ends before it starts

    assert postprocess_squad_predictions([example], features, start, end) == {"q": "t100 t101"}
    longer = postprocess_squad_predictions([example], features, start, end,
                                           max_answer_length=40)
    assert longer == {"q": " ".join(f"t{i}" for i in range(105, 140))}
    # With only the single best start and end per window no valid pair remains.
    assert postprocess_squad_predictions([example], features, start, end,
                                         n_best_size=1) == {"q": ""}
    # Masked (-inf) logits everywhere but one valid pair still yield that pair.
    masked_start = np.full_like(start, -np.inf)
    masked_end = np.full_like(end, -np.inf)
    masked_start[4, position(4, 90)] = masked_end[4, position(4, 90)] = 0.0
    assert postprocess_squad_predictions([example], features, masked_start, masked_end) == {
        "q": "t90"}
    with pytest.raises(InputError, match="do not match the features"):
        postprocess_squad_predictions([example], features, start[:, :10], end[:, :10])


# --- real SQuAD data, WordPiece and SentencePiece -------------------------------------


@pytest.fixture(scope="module")
def dev():
    return read_squad_file(DEV_FILE)


@pytest.fixture(scope="module")
def sentencepiece(dev, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("spm")
    text = tmp / "contexts.txt"
    text.write_text("\n".join(p["context"] for a in dev.articles[:3] for p in a["paragraphs"]),
                    encoding="utf-8")
    spec = TokenizerTrainSpec(inputs=(str(text),), vocab_size=1000)
    return SentencePieceTokenizer(train_sentencepiece(spec, str(tmp / "squad")))


@pytest.fixture(scope="module", params=["wordpiece", "sentencepiece"])
def tokenizer(request):
    if request.param == "wordpiece":
        from lmscale.data.wordpiece import WordPieceTokenizer
        return WordPieceTokenizer.from_checkpoint_dir(MINILM)
    return request.getfixturevalue("sentencepiece")


@needs_data
def test_dev_file_reads_and_splits_by_article(dev):
    assert dev.version == "1.1" and len(dev.articles) == 48
    train, evaluation = split_articles(dev.articles)
    assert (len(train), len(evaluation)) == (38, 10)
    examples, report = squad_examples(dev.articles)
    assert len(examples) == report.questions == 10570 and report.mismatched_answers == 0
    train_contexts = {p["context"] for a in train for p in a["paragraphs"]}
    assert not train_contexts & {p["context"] for a in evaluation for p in a["paragraphs"]}
    with pytest.raises(InputError, match="0 < num_train < 48"):
        split_articles(dev.articles, 48)


@needs_data
def test_labelled_spans_round_trip_to_the_answers(dev, tokenizer):
    articles = [dev.articles[0], dev.articles[40]]
    examples, _ = squad_examples(articles)
    features = build_squad_features(examples, tokenizer)
    starts, ends = features.arrays["start_positions"], features.arrays["end_positions"]
    labelled_examples, exact = set(), 0
    for f in np.flatnonzero(starts):
        example = examples[features.example_index[f]]
        answer_start = example.answer_start
        answer_end = answer_start + len(example.answers[0])
        (c0, first_end), (last_start, c1) = (features.token_char_spans[f, starts[f]],
                                             features.token_char_spans[f, ends[f]])
        text = example.context[c0:c1]
        # The span covers the answer and is minimal: its first and last tokens overlap it.
        assert c0 <= answer_start and answer_end <= c1
        assert first_end > answer_start and last_start < answer_end
        assert features.arrays["token_type_ids"][f, starts[f]] == 1
        exact += text.strip() == example.answers[0]
        labelled_examples.add(example.qas_id)
    # Every answer is labelled in some window; tokens cut inside a word ('1990' of
    # '1990s') make the span longer than the answer only in a few cases.
    assert labelled_examples == {e.qas_id for e in examples}
    assert exact / np.count_nonzero(starts) > 0.97
    # Oracle logits from the labels give back the answers through post-processing.
    start_logits = np.eye(features.is_max_context.shape[1])[starts]
    end_logits = np.eye(features.is_max_context.shape[1])[ends]
    predictions = postprocess_squad_predictions(examples, features, start_logits, end_logits)
    assert evaluate_squad(articles, predictions, warn_unanswered=False)["exact_match"] > 97


@needs_data
def test_real_long_passage_gets_strided_windows(dev, tokenizer):
    context = " ".join(p["context"] for p in dev.articles[0]["paragraphs"][:12])
    answer = dev.articles[0]["paragraphs"][11]["qas"][0]["answers"][0]["text"]
    example = SquadExample("long", "Who won?", context, (answer,), context.rindex(answer))
    features = build_squad_features([example], tokenizer)
    num_doc = len(tokenizer.encode_with_offsets(context)[0])
    doc_offset = len(tokenizer.encode("Who won?")) + 2
    max_doc = 384 - doc_offset - 1
    # Starts 0, 128, ... until a window reaches the last token.
    expected = 1 + -(-(num_doc - max_doc) // 128)
    assert num_doc > 1500 and len(features) == expected
    for k in range(len(features) - 1):
        this, following = features.token_char_spans[k], features.token_char_spans[k + 1]
        assert (this[doc_offset + 128:doc_offset + max_doc] ==
                following[doc_offset:doc_offset + max_doc - 128]).all()
    assert features.is_max_context.sum() == num_doc
    # The answer sits near the end: labelled in consecutive late windows, [CLS] elsewhere.
    labelled = np.flatnonzero(features.arrays["start_positions"])
    assert len(labelled) >= 1 and labelled[0] > len(features) // 2
    assert labelled.tolist() == list(range(labelled[0], labelled[-1] + 1))
    for f in labelled:
        c0 = features.token_char_spans[f, features.arrays["start_positions"][f], 0]
        c1 = features.token_char_spans[f, features.arrays["end_positions"][f], 1]
        assert context[c0:c1].strip() == answer


def test_read_errors_name_the_problem(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_squad_file(str(tmp_path / "none.json"))
    (tmp_path / "p.json").write_text(json.dumps({"q1": "answer"}))
    with pytest.raises(InputError, match="is this a predictions file"):
        read_squad_file(str(tmp_path / "p.json"))
    (tmp_path / "q.json").write_text(json.dumps(
        {"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "x"}]}]}]}))
    with pytest.raises(InputError, match="without 'id', 'question' and 'answers'"):
        read_squad_file(str(tmp_path / "q.json"))
