"""The `lmscale eval perplexity|fewshot` recipes: load a GPT checkpoint, evaluate, write
the results as JSON next to the checkpoint (`<checkpoint>/eval/`) and format a table."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from lmscale import storage
from lmscale.errors import InputError
from lmscale.parallel.mesh import make_mesh
from lmscale.tasks.decoder import load_decoder
from lmscale.tasks.fewshot import PromptFormat, evaluate_fewshot, read_examples
from lmscale.tasks.fewshot_adapters import (
    CLOZE_INSTRUCTION, CLOZE_STOPS, SST2_INSTRUCTION, cloze_examples, sst2_examples,
)
from lmscale.tasks.perplexity import perplexity
from lmscale.tasks.scoring import Scorer

ADAPTERS = ("sst2", "cloze")


def _write_result(checkpoint: str, name: str, result: dict) -> str:
    path = storage.join(checkpoint, "eval", name + ".json")
    storage.write_json(path, result)
    return path


def run_perplexity(checkpoint: str, text_file: str, window: int = 0, stride: int = 0,
                   mesh_sizes: dict | None = None, batch_size: int = 16) -> tuple[dict, str]:
    """Window defaults to the model's context and stride to half of it."""
    decoder = load_decoder(checkpoint)
    window = window or decoder.config.max_len
    stride = stride or max(1, window // 2)
    try:
        with storage.open_text(text_file) as f:
            text = f.read()
    except FileNotFoundError:
        raise InputError(f"text file {text_file!r} does not exist") from None
    scorer = Scorer(decoder.model, decoder.params["params"],
                    make_mesh(mesh_sizes or {"data": -1}), batch_size)
    result = {"checkpoint": checkpoint, "text": text_file,
              **perplexity(scorer, decoder.tokenizer, text, window, stride)}
    name = "perplexity_" + os.path.splitext(os.path.basename(text_file))[0]
    return result, _write_result(checkpoint, name, result)


@dataclass(frozen=True)
class FewshotSpec:
    task: str  # a JSONL file, or an adapter name: sst2, cloze
    data: str = ""  # the adapter's input file
    pool: str = ""  # demonstrations: JSONL, or the adapter's format for an adapter
    shots: Sequence[int] = (0,)
    seed: int = 0
    limit: int = 0  # evaluate the first N examples (0 = all)
    instruction: str | None = None  # None = the adapter's default ("" for JSONL tasks)
    separator: str = "\n\n"
    max_new_tokens: int = 16
    stop: Sequence[str] = ("\n",)


def _load(spec: FewshotSpec, path: str, limit: int):
    if spec.task == "sst2":
        return sst2_examples(path, limit)
    if spec.task == "cloze":
        return cloze_examples(path, limit)
    return read_examples(path, limit)


def run_fewshot(checkpoint: str, spec: FewshotSpec, mesh_sizes: dict | None = None,
                batch_size: int = 16) -> tuple[list[dict], str]:
    if spec.task in ADAPTERS and not spec.data:
        raise InputError(f"task {spec.task!r} reads --data (its input file)")
    examples = _load(spec, spec.data if spec.task in ADAPTERS else spec.task, spec.limit)
    pool = _load(spec, spec.pool, 0) if spec.pool else []
    if max(spec.shots) > 0 and not pool:
        raise InputError("few-shot evaluation (--shots > 0) needs --pool, the examples that "
                         "demonstrations are drawn from")
    default_instruction = {"sst2": SST2_INSTRUCTION, "cloze": CLOZE_INSTRUCTION}
    fmt = PromptFormat(default_instruction.get(spec.task, "") if spec.instruction is None
                       else spec.instruction, spec.separator)
    stop = CLOZE_STOPS if spec.task == "cloze" else spec.stop
    decoder = load_decoder(checkpoint)
    mesh = make_mesh(mesh_sizes or {"data": -1})
    scorer = generator = None
    if examples[0].choices:
        scorer = Scorer(decoder.model, decoder.params["params"], mesh, batch_size)
    else:
        generator = decoder.generator(mesh_sizes)
    results = []
    for shots in spec.shots:
        result = evaluate_fewshot(examples, pool, shots, fmt, decoder.tokenizer, scorer,
                                  generator, spec.seed, spec.max_new_tokens, stop)
        results.append({"checkpoint": checkpoint, "task": spec.task, "data": spec.data,
                        "pool": spec.pool, "instruction": fmt.instruction, **result})
    name = "fewshot_" + os.path.splitext(os.path.basename(spec.task))[0]
    return results, _write_result(checkpoint, name, {"results": results})


def fewshot_table(results: Sequence[dict]) -> str:
    lines = [f"{'task':<12} {'K':>3} {'n':>6}  {'metric':<12} {'accuracy':>9} {'± s.e.':>8}"]
    for r in results:
        metrics = ("summed", "normalised") if "summed_accuracy" in r else ("exact_match",)
        for m in metrics:
            lines.append(f"{os.path.basename(r['task']):<12} {r['shots']:>3} {r['examples']:>6}"
                         f"  {m:<12} {r[m + '_accuracy']:>9.4f} {r[m + '_stderr']:>8.4f}")
        if "majority_baseline" in r:
            lines.append(f"{'':<12} {'':>3} {'':>6}  {'majority':<12} "
                         f"{r['majority_baseline']:>9.4f}")
    return "\n".join(lines)
