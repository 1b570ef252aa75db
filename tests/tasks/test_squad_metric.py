import json
import os

import pytest

from lmscale.errors import InputError
from lmscale.tasks.squad_metric import (
    evaluate_squad,
    evaluate_squad_file,
    exact_match_score,
    f1_score,
    normalize_answer,
)

# <repo>/../shared/data, read in place.
DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "../../../shared/data"))
DEV_FILE = os.path.join(DATA, "squad", "dev-v1.1.json")


def _dataset(qas: list[tuple[str, list[str]]]) -> dict:
    context = "unused by the metric"
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [{
        "context": context,
        "qas": [{"id": qid, "question": "?",
                 "answers": [{"text": t, "answer_start": 0} for t in answers]}
                for qid, answers in qas]}]}]}


# (id, ground truths, prediction or None for missing, EM, F1), each worked out by hand
# from the official definitions.
CASES = [
    ("exact", ["Denver Broncos", "the Broncos"], "Denver Broncos", 1, 1.0),
    # "santa clara california" vs "santa clara": P = 2/2, R = 2/3, F1 = 2PR/(P+R) = 0.8.
    ("partial", ["Santa Clara, California"], "Santa Clara", 0, 0.8),
    # Case, punctuation and the article vanish: both normalise to "broncos".
    ("variants", ["The Broncos!"], "broncos", 1, 1.0),
    ("empty", ["gold"], "", 0, 0.0),
    # Best of three: "peyton manning was mvp" vs "peyton manning" gives P 2/4, R 1 -> 2/3;
    # vs "manning" 0.4; vs "quarterback peyton manning" 4/7.
    ("multi", ["Peyton Manning", "Manning", "quarterback Peyton Manning"],
     "Peyton Manning was the MVP", 0, 2 / 3),
    # Counter overlap: min(3, 2) = 2 shared "cat"; P = 2/3, R = 2/3.
    ("repeats", ["cat cat dog"], "cat cat cat", 0, 2 / 3),
    # Official quirk: an answer that normalises to nothing matches exactly, yet has F1 0.
    ("only-article", ["The"], "a", 1, 0.0),
    ("missing", ["Levi's Stadium"], None, 0, 0.0),
]


def test_normalize_answer_follows_the_official_steps():
    assert normalize_answer("The  Quick, brown-fox!") == "quick brownfox"
    assert normalize_answer("an apple and a banana") == "apple and banana"
    assert normalize_answer("U.S.\tArmy\n") == "us army"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_single_scores():
    assert exact_match_score("Santa Clara", "santa clara.") == 1.0
    assert f1_score("Santa Clara", "Santa Clara, California") == pytest.approx(0.8)
    assert f1_score("nothing shared", "gold") == 0.0


@pytest.mark.parametrize("qid, truths, prediction, em, f1", CASES)
def test_each_case_alone(qid, truths, prediction, em, f1):
    predictions = {} if prediction is None else {qid: prediction}
    result = evaluate_squad(_dataset([(qid, truths)])["data"], predictions,
                            warn_unanswered=False)
    assert result["exact_match"] == pytest.approx(100.0 * em)
    assert result["f1"] == pytest.approx(100.0 * f1)


def test_file_scores_average_over_all_questions_and_report_missing(tmp_path, capsys):
    dataset_file, predictions_file = tmp_path / "data.json", tmp_path / "pred.json"
    dataset_file.write_text(json.dumps(_dataset([(c[0], c[1]) for c in CASES])))
    predictions = {c[0]: c[2] for c in CASES if c[2] is not None}
    predictions["not-in-dataset"] = "ignored"
    predictions_file.write_text(json.dumps(predictions))

    result = evaluate_squad_file(str(dataset_file), str(predictions_file))

    # EM: exact, variants, only-article = 3 of 8. F1: 1 + 0.8 + 1 + 2/3 + 2/3 of 8.
    assert result == {"exact_match": pytest.approx(100 * 3 / 8),
                      "f1": pytest.approx(100 * (1 + 0.8 + 1 + 2 / 3 + 2 / 3) / 8)}
    assert set(result) == {"exact_match", "f1"}
    assert "Unanswered question missing will receive score 0." in capsys.readouterr().err


def test_version_mismatch_warns_like_the_official_script(tmp_path, capsys):
    data = _dataset([("q", ["a b"])])
    data["version"] = "2.0"
    (tmp_path / "d.json").write_text(json.dumps(data))
    (tmp_path / "p.json").write_text(json.dumps({"q": "a b"}))
    result = evaluate_squad_file(str(tmp_path / "d.json"), str(tmp_path / "p.json"))
    assert result["exact_match"] == 100.0
    assert "Evaluation expects v-1.1, but got dataset with v-2.0" in capsys.readouterr().err


@pytest.mark.parametrize("dataset_text, predictions_text, message", [
    (None, "{}", "does not exist"),
    ("{not json", "{}", "not valid JSON"),
    ('{"q": "x"}', "{}", "'data' list of articles"),
    ('{"data": [{"title": "t"}]}', "{}", "no 'paragraphs'"),
    ("DATASET", None, "does not exist"),
    ("DATASET", "[1, 2]", "mapping question id to answer text"),
    ("DATASET", '{"q": ["x"]}', "must be a string"),
    ("DATASET", "{,}", "not valid JSON"),
])
def test_bad_input_is_an_input_error(tmp_path, dataset_text, predictions_text, message):
    dataset_file, predictions_file = tmp_path / "d.json", tmp_path / "p.json"
    if dataset_text is not None:
        dataset_file.write_text(json.dumps(_dataset([("q", ["x"])]))
                                if dataset_text == "DATASET" else dataset_text)
    if predictions_text is not None:
        predictions_file.write_text(predictions_text)
    with pytest.raises(InputError, match=message):
        evaluate_squad_file(str(dataset_file), str(predictions_file))


@pytest.mark.skipif(not os.path.isfile(DEV_FILE), reason=f"SQuAD dev file not found at {DEV_FILE}")
def test_real_dev_file_gold_and_empty_predictions(tmp_path):
    with open(DEV_FILE, encoding="utf-8") as f:
        articles = json.load(f)["data"]
    gold = {qa["id"]: qa["answers"][0]["text"]
            for a in articles for p in a["paragraphs"] for qa in p["qas"]}
    assert len(gold) == 10570
    (tmp_path / "gold.json").write_text(json.dumps(gold))
    assert evaluate_squad_file(DEV_FILE, str(tmp_path / "gold.json")) == {
        "exact_match": 100.0, "f1": 100.0}
    # Three dev questions have a gold answer that normalises to "" (the quirk above), so
    # empty predictions still match exactly there.
    assert evaluate_squad(articles, {q: "" for q in gold}) == {
        "exact_match": pytest.approx(100 * 3 / 10570), "f1": 0.0}
