"""What a run shows at its end: GPT text samples and BERT fill-mask predictions."""

from __future__ import annotations

import jax
import numpy as np

from lmscale.data.loader import stack_examples
from lmscale.data.tokenizer import Tokenizer


def end_of_run_samples(model, params, data, count: int) -> list[str]:
    """What `lmscale pretrain` shows at its end: `count` GPT continuations of held-out
    prompts, or BERT fill-mask guesses on held-out examples (`params` on the host)."""
    held_out = stack_examples(data.held_out, count)
    if model.config.family == "gpt":
        prompts = [data.tokenizer.decode(row[:8].tolist()) for row in held_out["input_ids"]]
        return gpt_samples(model, params, data.tokenizer, prompts, num_tokens=48)
    return bert_fill_mask(model, params, data.tokenizer, held_out, count)


def gpt_samples(model, params, tokenizer: Tokenizer, prompts: list[str], num_tokens: int,
                temperature: float = 0.8, seed: int = 0) -> list[str]:
    """Each prompt and its continuation by temperature sampling (KV-cached generation).
    Prompts are cut from the left so that prompt + continuation fit the context."""
    from lmscale.models.generation import Sampling
    from lmscale.parallel.mesh import make_mesh
    from lmscale.tasks.generate import Generator

    # At least half the context stays for the prompt, which is cut from the left.
    num_tokens = min(num_tokens, model.config.max_len // 2)
    tails = [_prompt_tail(tokenizer, p, model.config.max_len - num_tokens) for p in prompts]
    generator = Generator(model, params["params"], tokenizer,
                          make_mesh({"data": 1}, jax.devices()[:1]))
    outputs = generator.generate(tails, num_tokens, Sampling(temperature, seed=seed))
    return [tail + out.text for tail, out in zip(tails, outputs)]


def _prompt_tail(tokenizer: Tokenizer, prompt: str, max_tokens: int) -> str:
    """The longest end of `prompt` that still encodes to at most `max_tokens` tokens
    (decoding a cut and encoding it again can yield more tokens than the cut had)."""
    ids = tokenizer.encode(prompt)[-max_tokens:]
    while ids and len(tokenizer.encode(tokenizer.decode(ids))) > max_tokens:
        ids = ids[1:]
    return tokenizer.decode(ids)


def bert_fill_mask(model, params, tokenizer: Tokenizer, examples: dict[str, np.ndarray],
                   count: int, top_k: int = 3) -> list[str]:
    """For the first masked position of `count` held-out examples: the context with that
    token shown as [MASK], the true token and the model's top-k guesses."""
    lines = []
    for i in range(min(count, len(examples["input_ids"]))):
        row = {k: v[i : i + 1] for k, v in examples.items()}
        position = int(row["masked_lm_positions"][0, 0])
        ids = row["input_ids"].copy()
        ids[0, position] = tokenizer.mask_id
        mlm_logits, _ = model.apply(params, ids, row["token_type_ids"], row["attention_mask"],
                                    row["masked_lm_positions"][:, :1])
        guesses = np.argsort(-np.asarray(mlm_logits[0, 0]))[:top_k]
        lo, hi = max(1, position - 12), position + 12
        left = tokenizer.decode(ids[0, lo:position].tolist())
        right = tokenizer.decode([t for t in ids[0, position + 1 : hi].tolist()
                                  if t not in (tokenizer.pad_id, tokenizer.sep_id)])
        truth = tokenizer.decode([int(row["masked_lm_ids"][0, 0])])
        lines.append(f"...{left} [MASK] {right}...  true: {truth!r}  predicted: "
                     + ", ".join(repr(tokenizer.decode([int(g)])) for g in guesses))
    return lines
