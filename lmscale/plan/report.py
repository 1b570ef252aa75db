"""`lmscale plan` output: a table for people, one JSON object for programs."""

from __future__ import annotations

from lmscale.plan.analysis import COLLECTIVES
from lmscale.plan.planner import Plan, gib
from lmscale.plan.roofline import DEFINITION
from lmscale.plan.search import Outcome


def plan_json(plan: Plan) -> dict:
    binding = plan.binding
    return {
        "target": plan.target.accelerator_type,
        "slices": plan.target.slices,
        "topology": plan.target.topology_name,
        "chip": plan.target.chip.name,
        "devices": plan.target.devices,
        "mesh": plan.mesh,
        "kind": plan.kind,
        "remat_policy": plan.remat_policy,
        "grad_accum_steps": plan.grad_accum_steps,
        "compute_dtype": plan.compute_dtype,
        "vocab": {"size": plan.padded_vocab[0], "padded": plan.padded_vocab[1]},
        "fits": plan.fits,
        "bytes_per_device": binding.largest[1].to_json() | {"program": binding.largest[0],
                                                            "seq_len": binding.seq_len},
        "hbm_bytes_per_device": plan.hbm_bytes,
        "flops_per_step_compiler": binding.per_device.flops * plan.target.devices,
        "flops_per_step_analytic": binding.model_flops,
        "collective_bytes_per_device": binding.per_device.collective_bytes,
        "estimated_step_seconds": plan.step_seconds,
        "estimated_tokens_per_sec": _weighted(plan, lambda p: p.estimate.tokens_per_sec),
        "estimated_mfu": plan.mfu,
        "estimate_definition": DEFINITION,
        "overrides": plan.overrides(),
        "phases": [{
            "seq_len": p.seq_len, "steps": p.steps, "tokens_per_step": p.tokens,
            "train_bytes_per_device": p.train_memory.to_json(),
            "eval_bytes_per_device": p.eval_memory.to_json() if p.eval_memory else None,
            "flops_per_step_compiler": p.per_device.flops * plan.target.devices,
            "flops_per_step_analytic": p.model_flops,
            "bytes_accessed_per_device": p.per_device.bytes_accessed,
            "collective_bytes_per_device": p.per_device.collective_bytes,
            "estimate": p.estimate.to_json(),
        } for p in plan.phases],
    }


def _weighted(plan: Plan, value) -> float:
    steps = sum(p.steps for p in plan.phases)
    return sum(value(p) * p.steps for p in plan.phases) / steps


def plan_text(plan: Plan) -> str:
    t = plan.target
    mesh = " ".join(f"{k}={v}" for k, v in plan.mesh.items())
    lines = [f"target    {t.describe()}; {t.chip.name}: {gib(t.chip.hbm_bytes)} HBM, "
             f"{t.chip.peak_bf16_flops / 1e12:.0f} TFLOP/s bf16 per device",
             f"mesh      {mesh}; remat {plan.remat_policy}; {plan.grad_accum_steps} "
             f"micro-batch(es); {plan.compute_dtype} compute; vocabulary "
             f"{plan.padded_vocab[0]:,} padded to {plan.padded_vocab[1]:,}"]
    for p in plan.phases:
        m = p.train_memory
        lines += [
            f"length {p.seq_len} ({p.steps:,} steps, {p.tokens:,} tokens a step)",
            f"  memory per device   state {gib(m.state)} + other {gib(m.other)} = "
            f"{gib(m.total)} train"
            + (f", {gib(p.eval_memory.total)} eval" if p.eval_memory else "")
            + f"  of {gib(plan.hbm_bytes)}",
            f"  FLOPs per step      compiler {p.per_device.flops * t.devices:.4g}  "
            f"analytic 6N+12LTd {p.model_flops:.4g}  "
            f"(ratio {p.per_device.flops * t.devices / p.model_flops:.3f})",
            "  collectives/device  " + "  ".join(
                f"{k} {p.per_device.collective_bytes.get(k, 0.0) / 2**20:,.0f} MiB"
                for k in COLLECTIVES),
            f"  estimate            {p.estimate.step_seconds * 1e3:,.1f} ms/step "
            f"(compute {p.estimate.compute_seconds * 1e3:,.1f}, HBM "
            f"{p.estimate.memory_seconds * 1e3:,.1f}, collectives "
            f"{p.estimate.collective_seconds * 1e3:,.1f}), "
            f"{p.estimate.tokens_per_sec:,.0f} tokens/s, MFU {p.estimate.mfu:.1%}"]
    lines += [f"fits      {'yes' if plan.fits else 'NO'}: {gib(plan.binding.peak_bytes)} of "
              f"{gib(plan.hbm_bytes)} per device",
              f"estimate  (roofline, not a measurement) {DEFINITION}"]
    return "\n".join(lines)


def search_text(outcomes: list[Outcome]) -> str:
    header = (f"{'rank':>4}  {'data':>4} {'fsdp':>4} {'tensor':>6}  {'remat':<13} "
              f"{'accum':>5}  {'GiB/device':>10}  {'est. step':>10}  {'MFU':>6}  overrides")
    lines = [header]
    fitting = [o for o in outcomes if o.plan is not None]
    for rank, o in enumerate(fitting, 1):
        c, p = o.candidate, o.plan
        lines.append(f"{rank:>4}  {c.data:>4} {c.fsdp:>4} {c.tensor:>6}  {c.remat_policy:<13} "
                     f"{c.grad_accum_steps:>5}  {p.binding.peak_bytes / 2**30:>10.2f}  "
                     f"{p.step_seconds * 1e3:>8.1f}ms  {p.mfu:>6.1%}  "
                     + " ".join(p.overrides()))
    rejected = len(outcomes) - len(fitting)
    if not fitting:
        lines.append("nothing tried fits this target; try a larger slice")
    lines.append(f"{len(fitting)} fit, {rejected} tried that do not (estimates: {DEFINITION})")
    return "\n".join(lines)
