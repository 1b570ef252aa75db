"""`lmscale convert` and `lmscale finetune squad|classify` end to end on a tiny BERT."""

import json
import os

import pytest

from lmscale.cli import main

SQUAD_ARTICLES = [
    ("Paris", "Paris is the capital of France. The Seine flows through Paris.",
     [("what is the capital of france ?", "Paris", 0),
      ("what river flows through paris ?", "Seine", 36)]),
    ("London", "London is the largest city in England. The Thames flows through London.",
     [("what river flows through london ?", "Thames", 43),
      ("what is the largest city in england ?", "London", 0)]),
    ("Bridge", "The bridge was built in 1850. It was built of stone.",
     [("when was the bridge built ?", "1850", 24)]),
]


def squad_file(path, articles=SQUAD_ARTICLES, bad_offset=False) -> str:
    data = []
    for a, (title, context, qas) in enumerate(articles):
        questions = []
        for q, (question, answer, start) in enumerate(qas):
            if bad_offset and a == 0 and q == 0:
                start += 3  # answer_start no longer points at the answer
            questions.append({"id": f"{a}-{q}", "question": question,
                              "answers": [{"text": answer, "answer_start": start}]})
        data.append({"title": title, "paragraphs": [{"context": context, "qas": questions}]})
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"version": "1.1", "data": data}, f)
    return str(path)


def tiny_overrides(checkpoint: str) -> list[str]:
    return [f"--config.init.checkpoint={checkpoint}", "--config.train.epochs=0.0",
            "--config.train.steps=3", "--config.train.batch_size=8",
            "--config.train.log_every=1", "--config.train.peak_flops=1e12",
            "--config.task.predict_batch_size=8"]


@pytest.fixture(scope="module")
def converted(tiny_hf_bert, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("converted"))
    assert main(["convert", "hf", "--model-dir", tiny_hf_bert, "--out", out]) == 0
    return out


def test_finetune_squad_writes_official_predictions_and_scores(converted, tmp_path, caplog):
    data = squad_file(tmp_path / "squad.json", bad_offset=True)
    workdir = tmp_path / "run"
    code = main(["finetune", "squad", "--config", "configs/squad_minilm.py",
                 "--workdir", str(workdir), f"--config.task.data={data}",
                 "--config.task.num_train_articles=2", "--config.task.max_seq_length=48",
                 "--config.task.doc_stride=16", "--config.task.max_query_length=12",
                 *tiny_overrides(converted)])
    assert code == 0
    predictions = json.loads((workdir / "predictions.json").read_text())
    assert set(predictions) == {"2-0"}  # the held-out article's question
    scores = json.loads((workdir / "eval.json").read_text())
    assert set(scores) == {"exact_match", "f1"}
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == 3
    assert summary["new_parameters"] == ["['params']['span']['bias']",
                                         "['params']['span']['kernel']"]
    # The answer whose offset does not match its context is counted, not trained on.
    assert "1 answers do not match their context" in caplog.text
    # The same file scored by `lmscale eval squad` gives the same numbers.
    held_out = squad_file(tmp_path / "held_out.json", SQUAD_ARTICLES[2:])
    assert main(["eval", "squad", "--data", held_out,
                 "--predictions", str(workdir / "predictions.json")]) == 0


def test_finetune_classify_reports_accuracy_and_binary_f1(converted, tmp_path):
    rows = ["sentence\tlabel"] + ["a good fun movie\t1", "an awful boring film\t0"] * 8
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "dev.jsonl").write_text(
        '{"sentence": "loved the acting", "label": 1}\n{"sentence": "hated it", "label": 0}\n')
    workdir = tmp_path / "run"
    code = main(["finetune", "classify", "--config", "configs/classify_minilm.py",
                 "--workdir", str(workdir), f"--config.task.train_data={tmp_path}/train.tsv",
                 f"--config.task.eval_data={tmp_path}/dev.jsonl",
                 "--config.task.max_seq_length=16", *tiny_overrides(converted)])
    assert code == 0
    scores = json.loads((workdir / "eval.json").read_text())
    assert scores["examples"] == 2 and {"accuracy", "f1"} <= set(scores)
    assert len(json.loads((workdir / "predictions.json").read_text())) == 2
    # Evaluated once per epoch (16 examples / batch 8 = 2 steps) by the shared loop.
    records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert any("eval_accuracy" in r and r["step"] == 2 for r in records)


def test_unknown_label_is_an_input_error(converted, tmp_path, capsys):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\ngood\tpositive\n")
    code = main(["finetune", "classify", "--config", "configs/classify_minilm.py",
                 "--workdir", str(tmp_path / "run"),
                 f"--config.task.train_data={tmp_path}/train.tsv",
                 f"--config.task.eval_data={tmp_path}/dev.tsv", *tiny_overrides(converted)])
    assert code == 2
    assert "labels ['positive'] (first at example 1) outside the known labels ['0', '1']" \
        in capsys.readouterr().err


def test_tokenizer_larger_than_embedding_table_is_an_input_error(tmp_path, capsys):
    from conftest import write_tiny_hf_bert

    model_dir = write_tiny_hf_bert(str(tmp_path / "hf"), vocab_extra=3)
    code = main(["convert", "hf", "--model-dir", model_dir, "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "tokenizer has" in err and "embedding table only" in err
    assert not os.path.exists(tmp_path / "out")


def test_finetune_config_typo_names_the_nearest_key(converted, capsys):
    code = main(["finetune", "squad", "--config", "configs/squad_minilm.py",
                 "--config.task.doc_strid=64"])
    assert code == 2
    assert "did you mean 'task.doc_stride'" in capsys.readouterr().err
