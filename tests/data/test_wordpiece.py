import json
import os

import pytest
from tokenizers import Tokenizer, models

from lmscale.data.wordpiece import WordPieceTokenizer
from lmscale.errors import InputError

# <repo>/../shared/data, read in place.
DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "../../../shared/data"))
MINILM = os.path.join(DATA, "models", "all-MiniLM-L6-v2")
DEV_FILE = os.path.join(DATA, "squad", "dev-v1.1.json")
needs_minilm = pytest.mark.skipif(not os.path.isdir(MINILM),
                                reason=f"all-MiniLM-L6-v2 checkpoint not found at {MINILM}")

SENTENCES = [
    ("Super Bowl 50 was an American football game to determine the champion of the National "
     "Football League (NFL) for the 2015 season."),
    ("The American Football Conference (AFC) champion Denver Broncos defeated the National "
     "Football Conference (NFC) champion Carolina Panthers 24–10 to earn their third title."),
    "Paris's Musée d'Orsay, the Zürich Hauptbahnhof and 東京 are   far apart; naïve façades!",
    "He said: \"It's unaffable, isn't it?\" — and left at 3:45pm on 12/31/1999.",
]


@pytest.fixture(scope="module")
def tokenizer():
    return WordPieceTokenizer.from_checkpoint_dir(MINILM)


@pytest.fixture(scope="module")
def reference():
    """The `tokenizers` library's own pipeline, BERT post-processing included."""
    ref = Tokenizer.from_file(os.path.join(MINILM, "tokenizer.json"))
    ref.no_truncation()
    ref.no_padding()
    return ref


@pytest.fixture(scope="module")
def contexts():
    if not os.path.isfile(DEV_FILE):
        pytest.skip(f"SQuAD dev file not found at {DEV_FILE}")
    with open(DEV_FILE, encoding="utf-8") as f:
        articles = json.load(f)["data"]
    return [p["context"] for a in (articles[0], articles[41]) for p in a["paragraphs"]]


@needs_minilm
def test_special_tokens_and_vocab(tokenizer):
    assert tokenizer.vocab_size == 30522
    assert (tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == (
        0, 101, 102, 103)
    assert tokenizer.eot_id is None


@needs_minilm
def test_known_ids_and_word_starts(tokenizer):
    assert tokenizer.encode("Hello world") == [7592, 2088]
    ids = tokenizer.encode("unaffable")
    assert [tokenizer.id_to_piece(i) for i in ids] == ["una", "##ffa", "##ble"]
    assert [tokenizer.starts_word(i) for i in ids] == [True, False, False]
    assert tokenizer.starts_word(tokenizer.cls_id)
    assert tokenizer.decode(tokenizer.encode("The Denver Broncos!")) == "the denver broncos!"


@needs_minilm
@pytest.mark.parametrize("text", SENTENCES)
def test_matches_library_bert_post_processing_token_for_token(tokenizer, reference, text):
    ids, offsets = tokenizer.encode_with_offsets(text)
    expected = reference.encode(text)
    assert expected.ids == [101, *ids, 102]
    assert expected.tokens[1:-1] == [tokenizer.id_to_piece(i) for i in ids]
    assert expected.offsets[1:-1] == offsets
    question = "Who won Super Bowl 50?"
    pair = reference.encode(question, text)
    q_ids = tokenizer.encode(question)
    assert pair.ids == [101, *q_ids, 102, *ids, 102]
    assert pair.type_ids == [0] * (len(q_ids) + 2) + [1] * (len(ids) + 1)


@needs_minilm
def test_offsets_index_the_original_text(tokenizer, reference, contexts):
    # Lower case and strip accents; handle_chinese_chars pads CJK characters with spaces.
    def normalize(text):
        return reference.normalizer.normalize_str(text).strip()

    checked = 0
    for text in contexts + SENTENCES:
        ids, offsets = tokenizer.encode_with_offsets(text)
        for token_id, (start, end) in zip(ids, offsets):
            piece = tokenizer.id_to_piece(token_id)
            if piece != "[UNK]":
                assert normalize(text[start:end]) == piece.removeprefix("##")
                checked += 1
    assert checked > 10_000


@needs_minilm
def test_vocab_txt_build_equals_tokenizer_json(tokenizer, contexts, tmp_path):
    # Only vocab.txt and tokenizer_config.json: the BertWordPieceTokenizer pipeline.
    os.symlink(os.path.join(MINILM, "vocab.txt"), tmp_path / "vocab.txt")
    os.symlink(os.path.join(MINILM, "tokenizer_config.json"), tmp_path / "tokenizer_config.json")
    from_vocab = WordPieceTokenizer.from_checkpoint_dir(str(tmp_path))
    assert from_vocab.vocab_size == tokenizer.vocab_size
    assert (from_vocab.pad_id, from_vocab.cls_id, from_vocab.sep_id, from_vocab.mask_id) == (
        0, 101, 102, 103)
    for text in contexts + SENTENCES:
        assert from_vocab.encode_with_offsets(text) == tokenizer.encode_with_offsets(text)


@needs_minilm
def test_case_follows_tokenizer_config(tmp_path):
    os.symlink(os.path.join(MINILM, "vocab.txt"), tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    cased = WordPieceTokenizer.from_checkpoint_dir(str(tmp_path))
    # The uncased vocabulary has no 'H': without lower-casing 'Hello' is unknown.
    assert cased.encode("Hello world") == [100, 2088]


def test_bad_checkpoint_dirs_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="neither tokenizer.json nor vocab.txt"):
        WordPieceTokenizer.from_checkpoint_dir(str(tmp_path))
    Tokenizer(models.BPE()).save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(InputError, match="not WordPiece"):
        WordPieceTokenizer.from_checkpoint_dir(str(tmp_path))
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(InputError, match="cannot load"):
        WordPieceTokenizer.from_checkpoint_dir(str(tmp_path))
    (tmp_path / "vocab.txt").write_text("hello\nworld\n")
    with pytest.raises(InputError, match="lacks the BERT special tokens"):
        WordPieceTokenizer.from_vocab_file(str(tmp_path / "vocab.txt"))
