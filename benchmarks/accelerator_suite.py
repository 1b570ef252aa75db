"""The accelerator suite: lmscale's train step against Hugging Face PyTorch on one GPU or
TPU host, at the paper recipes' shapes, in one run (`accelerator_suite.sh` drives it).

    python benchmarks/accelerator_suite.py lmscale --out DIR   # JAX: attention check, steps
    python benchmarks/accelerator_suite.py pytorch --out DIR   # the peer, own process
    python benchmarks/accelerator_suite.py report --out DIR    # one table from both

Workloads (bf16 compute, float32 parameters and accumulation, AdamW, clipping at 1.0,
dropout 0, no rematerialisation, synthetic tokens):
  - GPT-2 small and medium, 1,024 tokens, next-token loss over every position;
  - BERT-Large on SQuAD (configs/squad_bert_large.py): 384-token windows, span loss, every
    position a real token (the costliest window; real windows are often shorter).

MFU = model FLOPs per step / step time / the chip table's dense bf16 peak
(lmscale/parallel/chips.py). Model FLOPs are PaLM's 6N + 12·L·T·d per token (GPT), and for
the SQuAD encoder the same without the vocabulary projection it never computes. Neither
counts recomputation; no workload here rematerialises.

The SQuAD 2-epoch time is 2 x 89,779 windows (benchmarks/squad_stats.py) / (examples per
second): the step alone, without input, evaluation or compilation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
import traceback
from types import SimpleNamespace

from squad_stats import EPOCHS as SQUAD_EPOCHS, TRAIN_WINDOWS as SQUAD_TRAIN_WINDOWS

# (name, lmscale preset, batch, sequence length). The SQuAD row's batch and length are
# configs/squad_bert_large.py's (a test checks they agree).
WORKLOADS = {
    "gpt2-small": ("gpt2", 16, 1024),
    "gpt2-medium": ("gpt2-medium", 16, 1024),
    "squad-bert-large": ("bert-large", 24, 384),
}
QUICK_WORKLOADS = {  # --quick: the same code paths at CPU sizes, for the test suite
    "gpt2-small": ("gpt2-tiny", 8, 64),
    "squad-bert-large": ("bert-tiny", 8, 64),
}


def _workloads(quick: bool) -> dict:
    return QUICK_WORKLOADS if quick else WORKLOADS


def _write(out: str, name: str, rows) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name), "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=2)


def _log(message: str) -> None:
    print(message, flush=True)


# --- lmscale (JAX) --------------------------------------------------------------------

def _model_config(preset_name: str, attention: str):
    from lmscale.models import ModelConfig, preset
    return ModelConfig.from_dict(preset(preset_name, compute_dtype="bfloat16", dropout=0.0,
                                        attention_impl=attention))


def _attention_and_grad(cfg, causal: bool, x, mask):
    """One attention layer's output on `x` and the gradient of its squared real-token
    outputs with respect to `x`."""
    import jax
    import jax.numpy as jnp
    from lmscale.models.layers import SelfAttention

    layer = SelfAttention(cfg, causal=causal)
    params = layer.init(jax.random.key(1), x, mask)
    real = 1.0 if mask is None else mask[:, 0, 0, :, None]

    def loss(x):
        y = layer.apply(params, x, mask)
        return jnp.sum((y.astype(jnp.float32) * real) ** 2), y
    (_, y), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(x)
    return y * real, grad * real


def attention_check(quick: bool) -> list[dict]:
    """cuDNN flash attention against XLA's on the same inputs: GPT (causal) and BERT (right
    padding) attention layers, outputs and input gradients, largest absolute difference
    over real tokens."""
    import jax
    import jax.numpy as jnp
    from lmscale.models.layers import attention_implementation

    rows = []
    heads, dim = (2, 64) if quick else (16, 64)
    for family, causal in (("gpt", True), ("bert", False)):
        cfg = _model_config("gpt2-tiny" if family == "gpt" else "bert-tiny", "auto")
        cfg = dataclasses.replace(cfg, d_model=heads * dim, num_heads=heads)
        x = jax.random.normal(jax.random.key(0), (4, 256, cfg.d_model), jnp.bfloat16)
        lengths = jnp.array([256, 200, 129, 7])
        mask = None if causal else (jnp.arange(256)[None, :] < lengths[:, None]
                                    )[:, None, None, :]
        chosen = attention_implementation(cfg, jnp.bfloat16, mask, decode=False)
        (y_cudnn, g_cudnn), (y_xla, g_xla) = (
            _attention_and_grad(dataclasses.replace(cfg, attention_impl=impl), causal, x, mask)
            for impl in ("cudnn", "xla"))
        diff_y = float(jnp.max(jnp.abs(y_cudnn - y_xla)))
        diff_g = float(jnp.max(jnp.abs(g_cudnn - g_xla)))
        scale = float(jnp.max(jnp.abs(y_xla)))
        rows.append({"family": family, "auto_chooses": chosen, "max_abs_diff_output": diff_y,
                     "max_abs_diff_input_grad": diff_g, "output_scale": scale})
        _log(f"attention {family}: auto -> {chosen}; |cudnn - xla| output {diff_y:.3g} "
             f"(scale {scale:.3g}), input gradient {diff_g:.3g}")
    return rows


def lmscale_step(name: str, preset_name: str, batch: int, seq: int, attention: str,
                 steps: int, profile_dir: str = "") -> dict:
    """One workload's compiled train step on every local device (data parallel)."""
    import jax
    from lmscale.models.bert_heads import BertForQuestionAnswering
    from lmscale.parallel.mesh import make_mesh
    from lmscale.tasks.objectives import SpanObjective
    from lmscale.train import throughput
    from lmscale.train.bench import synthetic_batch, synthetic_span_batch, time_train_step
    from lmscale.train.objectives import objective_for
    from lmscale.train.optimizer import OptimizerConfig, make_optimizer, make_schedule
    from lmscale.train.step import check_batch_split, model_for_mesh

    mesh = make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    check_batch_split(batch, 1, mesh)
    model = model_for_mesh(_model_config(preset_name, attention), mesh)
    if model.family == "gpt":
        data = synthetic_batch(model, batch, seq, 0)
        objective = objective_for(model)
        flops = throughput.pretrain_flops_per_step(model, batch, seq, 0)
    else:
        data = synthetic_span_batch(model, batch, seq)
        objective = SpanObjective(BertForQuestionAnswering(model))
        flops = float(throughput.encoder_flops_per_token(model, seq)) * batch * seq
    opt = OptimizerConfig(learning_rate=1e-4, warmup_steps=10, schedule="linear")
    peak = throughput.peak_flops_per_device("bfloat16")
    r = time_train_step(objective, make_optimizer(opt, 1000), make_schedule(opt, 1000), mesh,
                        data, 1, flops, peak, steps=steps, warmup=3, profile_dir=profile_dir)
    device = jax.devices()[0]
    return {"workload": name, "impl": f"lmscale ({attention} attention)",
            "device": f"{jax.device_count()} x {device.device_kind}", "batch": batch,
            "seq": seq, "step_ms": r.step_seconds * 1e3, "tokens_per_sec": r.tokens_per_sec,
            "examples_per_sec": r.examples_per_sec, "model_tflops": r.model_flops_per_sec / 1e12,
            "peak_tflops": r.peak_flops_per_sec / 1e12, "mfu": r.mfu,
            "compile_s": r.compile_seconds, "flops_per_step": flops}


def run_lmscale(out: str, quick: bool, steps: int, profile: bool = False) -> int:
    import jax
    _log(f"jax {jax.__version__}, backend {jax.default_backend()}, "
         f"{jax.device_count()} x {jax.devices()[0].device_kind}")
    gpu = jax.default_backend() == "gpu"
    if gpu:
        try:
            _write(out, "attention_check.json", attention_check(quick))
        except Exception:  # report it and go on to the timings
            traceback.print_exc()
    rows = []
    # XLA's attention second: on a GPU "auto" is cuDNN's, and the comparison is secondary.
    attentions = ("auto", "xla") if gpu else ("auto",)
    for attention in attentions:
        for name, (preset_name, batch, seq) in _workloads(quick).items():
            try:
                row = lmscale_step(name, preset_name, batch, seq, attention, steps)
            except Exception:
                traceback.print_exc()
                continue
            rows.append(row)
            _log(f"{name} {row['impl']}: {row['step_ms']:.1f} ms/step, "
                 f"{row['tokens_per_sec']:,.0f} tokens/s, MFU {row['mfu']:.1%} "
                 f"(compile {row['compile_s']:.0f} s)")
            _write(out, "lmscale.json", rows)
    if profile:
        profile_busiest(out, quick, steps)
    return 0 if rows else 1


def profile_busiest(out: str, quick: bool, steps: int) -> None:
    """Trace the first workload's step (auto attention) and keep its busiest operations."""
    import tempfile

    from lmscale.train.bench import PROFILED_STEPS
    from lmscale.train.profile import top_operations

    name, (preset_name, batch, seq) = next(iter(_workloads(quick).items()))
    trace = tempfile.mkdtemp(prefix="lmscale-trace-")
    try:
        lmscale_step(name, preset_name, batch, seq, "auto", steps, profile_dir=trace)
        busiest = top_operations(trace, PROFILED_STEPS, top=25)
    except Exception:
        traceback.print_exc()
        return
    _write(out, "profile.json", [{"workload": name, "operation": op, "ms_per_step": ms,
                                  "share": share} for op, ms, share in busiest])
    _log(f"busiest operations of {name} (lmscale, auto attention):")
    for op, ms, share in busiest:
        _log(f"  {ms:9.2f} ms/step {share:6.1%}  {op}")


# --- Hugging Face PyTorch ---------------------------------------------------------------

def torch_step(name: str, preset_name: str, batch: int, seq: int, steps: int) -> dict:
    """The same workload in transformers on PyTorch: float32 weights, bf16 autocast, the
    library's default attention (SDPA), fused AdamW on CUDA, gradient clipping at 1.0."""
    import torch
    import transformers
    from lmscale.models import ModelConfig, preset
    from lmscale.parallel.chips import chip_for_device_kind, peak_flops
    from lmscale.train import throughput
    from peers.step_timing import hf_config

    shape = ModelConfig.from_dict(preset(preset_name, dropout=0.0))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, shape.vocab_size, (batch, seq), generator=gen).to(device)
    config = hf_config(SimpleNamespace(
        family=shape.family, vocab=shape.vocab_size, max_len=shape.max_len,
        d_model=shape.d_model, layers=shape.num_layers, heads=shape.num_heads, d_ff=shape.d_ff))
    if shape.family == "gpt":
        model = transformers.GPT2LMHeadModel(config)
        inputs = {"input_ids": ids, "labels": ids}
        flops = throughput.pretrain_flops_per_step(shape, batch, seq, 0)
    else:
        model = transformers.BertForQuestionAnswering(config)
        positions = torch.randint(0, seq, (2, batch), generator=gen).to(device)
        inputs = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids),
                  "attention_mask": torch.ones_like(ids),
                  "start_positions": positions[0], "end_positions": positions[1]}
        flops = float(throughput.encoder_flops_per_token(shape, seq)) * batch * seq
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01,
                                  fused=device == "cuda")

    def step():
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        step()
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    kind = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    chip = chip_for_device_kind(kind)
    peak = peak_flops(chip, "bfloat16") if chip else float("nan")
    attention = model.config._attn_implementation
    return {"workload": name, "impl": f"PyTorch {torch.__version__} + transformers "
            f"{transformers.__version__} ({attention} attention, autocast bf16)",
            "device": kind,
            "batch": batch, "seq": seq, "step_ms": seconds * 1e3,
            "tokens_per_sec": batch * seq / seconds, "examples_per_sec": batch / seconds,
            "model_tflops": flops / seconds / 1e12, "peak_tflops": peak / 1e12,
            "mfu": flops / seconds / peak, "compile_s": 0.0, "flops_per_step": flops}


def run_pytorch(out: str, quick: bool, steps: int) -> int:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:
        _log(f"PyTorch peer skipped: {err} (pip install -e '.[peers]')")
        return 0
    rows = []
    for name, (preset_name, batch, seq) in _workloads(quick).items():
        try:
            row = torch_step(name, preset_name, batch, seq, steps)
        except Exception:
            traceback.print_exc()
            continue
        rows.append(row)
        _log(f"{name} {row['impl']}: {row['step_ms']:.1f} ms/step, "
             f"{row['tokens_per_sec']:,.0f} tokens/s, MFU {row['mfu']:.1%}")
        _write(out, "pytorch.json", rows)
    return 0


# --- report -----------------------------------------------------------------------------

def _percent(fraction: float) -> str:
    return "-" if fraction != fraction else f"{fraction:.1%}"  # NaN: no chip-table peak


def report(out: str) -> str:
    """A markdown table of every measured row, with lmscale's speed-up over the peer."""
    rows = []
    for name in ("lmscale.json", "pytorch.json"):
        path = os.path.join(out, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                rows += json.load(f)
    peers = {r["workload"]: r for r in rows if r["impl"].startswith("PyTorch")}
    lines = ["| workload | implementation | batch x seq | step ms | tokens/s | examples/s "
             "| MFU | vs PyTorch |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["workload"], r["impl"])):
        peer = peers.get(r["workload"])
        ratio = f"{peer['step_ms'] / r['step_ms']:.2f}x" if peer else "-"
        lines.append(f"| {r['workload']} | {r['impl']} | {r['batch']} x {r['seq']} "
                     f"| {r['step_ms']:.1f} | {r['tokens_per_sec']:,.0f} "
                     f"| {r['examples_per_sec']:,.1f} | {_percent(r['mfu'])} | {ratio} |")
    squad = [r for r in rows if r["workload"] == "squad-bert-large"]
    if squad:
        lines.append("")
        lines.append(f"SQuAD v1.1, {SQUAD_EPOCHS} epochs = {SQUAD_EPOCHS} x "
                     f"{SQUAD_TRAIN_WINDOWS:,} windows (384 tokens, stride 128), step time "
                     f"only:")
        for r in squad:
            minutes = SQUAD_EPOCHS * SQUAD_TRAIN_WINDOWS / r["examples_per_sec"] / 60
            lines.append(f"- {r['impl']}: {minutes:.1f} min")
    attention = os.path.join(out, "attention_check.json")
    if os.path.exists(attention):
        with open(attention, encoding="utf-8") as f:
            for c in json.load(f):
                lines.append(f"- attention {c['family']}: auto uses {c['auto_chooses']}; "
                             f"max |cuDNN - XLA| output {c['max_abs_diff_output']:.2g} "
                             f"(largest output {c['output_scale']:.2g}), input gradient "
                             f"{c['max_abs_diff_input_grad']:.2g}")
    text = "\n".join(lines)
    with open(os.path.join(out, "table.md"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("lmscale", "pytorch", "report"))
    parser.add_argument("--out", default="runs/accelerator_suite")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (CPU test)")
    parser.add_argument("--profile", action="store_true",
                        help="also trace the first workload and list its busiest operations")
    args = parser.parse_args(argv)
    if args.part == "lmscale":
        return run_lmscale(args.out, args.quick, args.steps, args.profile)
    if args.part == "pytorch":
        return run_pytorch(args.out, args.quick, args.steps)
    print(report(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
