"""Hugging Face PyTorch peer: transformers 5's `GPT2LMHeadModel` (causal-LM loss) or
`BertForPreTraining` (MLM + NSP) with the library's default attention, trained by
`torch.optim.AdamW` (the fused CPU kernel where this torch has one, else foreach) on every
core (`torch.set_num_threads(os.cpu_count())`). Prints one JSON line. Needs the `peers`
extra: `pip install -e '.[peers]'`.

bfloat16 is mixed precision: float32 parameters and optimizer state, the forward pass under
`torch.autocast("cpu", dtype=torch.bfloat16)`; Hugging Face upcasts the logits for the loss.
"""

from __future__ import annotations

import os

import torch
import transformers

from step_timing import emit, hf_config, parse_step_args, peer_batch, time_steps


def hf_model(args) -> torch.nn.Module:
    if args.family == "gpt":
        return transformers.GPT2LMHeadModel(hf_config(args))
    return transformers.BertForPreTraining(hf_config(args))


def adamw(params, args) -> tuple[torch.optim.Optimizer, str]:
    """The fused kernel (HF Trainer's `adamw_torch_fused`) where this build has it on CPU."""
    kw = dict(lr=args.learning_rate, betas=(0.9, 0.999), eps=1e-8,
              weight_decay=args.weight_decay)
    params = list(params)
    try:
        return torch.optim.AdamW(params, fused=True, **kw), "fused"
    except RuntimeError:
        return torch.optim.AdamW(params, foreach=True, **kw), "foreach"


def model_inputs(args) -> dict[str, torch.Tensor]:
    batch = {k: torch.from_numpy(v) for k, v in peer_batch(args).items()}
    ids = batch["input_ids"].long()
    if args.family == "gpt":
        return {"input_ids": ids, "labels": ids}  # the model shifts the labels itself
    # -100 = ignored by the loss: only the masked positions are scored.
    labels = torch.where(batch["mlm_weights"] > 0, batch["mlm_labels"].long(), -100)
    return {"input_ids": ids, "token_type_ids": batch["token_type_ids"].long(),
            "attention_mask": batch["attention_mask"].long(), "labels": labels,
            "next_sentence_label": batch["next_sentence_label"].long()}


def main(argv=None) -> None:
    args = parse_step_args(__doc__.splitlines()[0], argv)
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(args.seed)
    model = hf_model(args).train()
    optimizer, kernel = adamw(model.parameters(), args)
    inputs = model_inputs(args)
    bf16 = args.dtype == "bfloat16"

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**inputs).loss
        loss.backward()
        if args.clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)
        optimizer.step()

    timing = time_steps(step, args.steps, args.warmup, args.interleave)
    emit(args, "hf-torch", timing, adamw_kernel=kernel, threads=torch.get_num_threads(),
         attention=model.config._attn_implementation,
         versions={"torch": torch.__version__, "transformers": transformers.__version__})


if __name__ == "__main__":
    main()
