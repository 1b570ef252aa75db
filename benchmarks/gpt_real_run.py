"""The GPT line end to end on real text, sized for a 2-core CPU (about 10 minutes):

1. pretrain configs/gpt2_tiny.py on Tiny Shakespeare;
2. fine-tune it on prompt/completion pairs from WikiText-2 (prompt = the first 8 words of
   a sentence, completion = the rest), completion loss before vs after on held-out pairs;
3. zero/one/few-shot SST-2 (multiple choice) of the pretrained model, accuracy ± s.e.

    python benchmarks/gpt_real_run.py --workdir /tmp/gpt_real_run
Figures are reported in docs/gpt_results.md.
"""

import argparse
import json
import os
import re

from lmscale.cli import main as lmscale

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def wikitext_pairs(path: str, count: int) -> list[dict]:
    text = open(path, encoding="utf-8").read()
    text = re.sub(r" @(.)@ ", r"\1", text)  # WikiText's tokenised "@-@" joins
    pairs = []
    for sentence in re.split(r"(?<=\.) ", text):
        words = sentence.split()
        if 14 <= len(words) <= 40 and "=" not in sentence:
            pairs.append({"prompt": " ".join(words[:8]), "completion": " " +
                          " ".join(words[8:])})
        if len(pairs) == count:
            break
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default="/tmp/gpt_real_run")
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--sst2-examples", type=int, default=300)
    args = parser.parse_args()
    pretrained = os.path.join(args.workdir, "pretrain")
    assert lmscale(["pretrain", "--config", "configs/gpt2_tiny.py", "--workdir", pretrained,
                    f"--config.data.sources=['{DATA}/text/tinyshakespeare.txt']",
                    f"--config.train.steps={args.pretrain_steps}"]) == 0
    pairs = wikitext_pairs(os.path.join(DATA, "text", "wikitext-2", "valid.txt"), 2200)
    files = {}
    for name, part in (("train", pairs[:2000]), ("eval", pairs[2000:])):
        files[name] = os.path.join(args.workdir, f"pairs_{name}.jsonl")
        with open(files[name], "w", encoding="utf-8") as f:
            f.writelines(json.dumps(p) + "\n" for p in part)
    finetuned = os.path.join(args.workdir, "finetune")
    assert lmscale(["finetune", "lm", "--config", "configs/lm_finetune_tiny.py", "--workdir",
                    finetuned, f"--config.init.checkpoint={pretrained}",
                    f"--config.task.train_data={files['train']}",
                    f"--config.task.eval_data={files['eval']}", "--config.train.epochs=2"]) == 0
    assert lmscale(["eval", "fewshot", "--checkpoint", pretrained, "--task", "sst2", "--data",
                    os.path.join(DATA, "sst2", "glue_dev.tsv"), "--pool",
                    os.path.join(DATA, "sst2", "train.tsv"), "--shots", "0", "1", "4",
                    "--limit", str(args.sst2_examples)]) == 0
    assert lmscale(["eval", "perplexity", "--checkpoint", pretrained, "--text",
                    os.path.join(DATA, "text", "wikitext-2", "valid.txt")]) == 0
    print(open(os.path.join(finetuned, "summary.json")).read())


if __name__ == "__main__":
    main()
