"""SQuAD v1.1 fine-tuning timed on the present hardware, beside the published references.

Runs the BERT paper's SQuAD setup (section 4.2: max_seq_length 384, doc_stride 128, batch
32, lr 5e-5/3e-5, 2 epochs, 10% warmup then linear decay) through `lmscale finetune
squad`, and reports wall time to the end, time to reach a target F1, training examples/s
and MFU. Any config field can be overridden to size the run to the hardware:

    python benchmarks/squad_timing.py --config configs/squad_bert_base.py --target-f1 88
    python benchmarks/squad_timing.py --config configs/squad_minilm.py --eval-every 50 \\
        --config.train.epochs=0.0 --config.train.steps=200

With `--target TPU_TYPE` (v2-8, v3-8, v4-8, v5e-8, ...) nothing is trained: the config's
train step is compiled for that TPU topology on this machine (`lmscale plan`), and its
roofline step-time estimate becomes a 2-epoch fine-tuning time over SQuAD v1.1 train's
89,779 windows (benchmarks/squad_stats.py):

    python benchmarks/squad_timing.py --config configs/squad_bert_large.py --target v3-8

Time to the target F1 is read from checkpoints saved every `--eval-every` steps and scored
after training (scoring is not counted); elapsed time at step s is taken as
train_seconds * s / steps, i.e. compilation is spread evenly over the steps. With
`--eval-every 0` only the final model is scored, so the time to target is the whole run
when the target is reached and "not reached" otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import jax

from lmscale.config import apply_overrides, check_keys, load_config_file
from lmscale.tasks.squad import run_squad, score_params, squad_template
from lmscale.train.checkpoint import Checkpointer

# Published SQuAD v1.1 dev results and fine-tuning times.
REFERENCES = [
    ("BERT-Base (BERT paper, google-research/bert)", "1 Cloud TPU v2/v3", 88.5, "~30 min"),
    ("BERT-Large (BERT paper, google-research/bert)", "1 Cloud TPU", 90.9, "~30 min"),
    ("BERT-Large (NVIDIA DeepLearningExamples)", "8x A100 80GB", 91.0, "~3.4 min"),
]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/squad_minilm.py")
    parser.add_argument("--workdir", default="runs/squad_timing")
    parser.add_argument("--target-f1", type=float, default=80.0)
    parser.add_argument("--target", default="",
                        help="estimate 2 epochs on this TPU type from the compiled step "
                             "instead of training (e.g. v3-8)")
    parser.add_argument("--eval-every", type=int, default=0,
                        help="score checkpoints every N steps for time-to-F1 (0 = final only)")
    args, rest = parser.parse_known_args(argv)
    overrides = [a[len("--config."):] for a in rest if a.startswith("--config.")]
    if len(overrides) != len(rest):
        parser.error(f"unrecognised arguments: {[a for a in rest if a[2:] not in overrides]}")
    return args, overrides


def estimate_on_target(config, config_path: str, target_name: str) -> int:
    """Compile the config's train step for a TPU topology and print the 2-epoch estimate."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compiling for a TPU needs no accelerator
    from lmscale.parallel.topology import parse_target
    from lmscale.plan.planner import plan
    from squad_stats import EPOCHS, TRAIN_WINDOWS

    start = time.perf_counter()
    result = plan(config, parse_target(target_name), compile_eval=False)
    phase = result.phases[0]
    steps = -(-EPOCHS * TRAIN_WINDOWS // config.train.batch_size)
    minutes = steps * phase.estimate.step_seconds / 60
    report = {
        "target": target_name, "config": config_path, "mesh": result.mesh,
        "batch_size": config.train.batch_size, "max_seq_length": config.task.max_seq_length,
        "train_windows": TRAIN_WINDOWS, "epochs": EPOCHS, "steps": steps,
        "fits": result.fits, "bytes_per_device": phase.train_memory.total,
        "hbm_bytes": result.hbm_bytes, "step_seconds_estimate": phase.estimate.step_seconds,
        "estimate_mfu": phase.estimate.mfu, "minutes_estimate": minutes,
        "minutes_if_compute_bound": steps * phase.estimate.compute_seconds / 60,
        "estimate": phase.estimate.to_json(),
        "compile_seconds": time.perf_counter() - start,
    }
    print(json.dumps(report, indent=2))
    print(f"\n{target_name}: {steps:,} steps x {phase.estimate.step_seconds * 1e3:.0f} ms "
          f"(roofline estimate of the compiled step) = {minutes:.0f} min for {EPOCHS} epochs "
          f"({report['minutes_if_compute_bound']:.0f} min if compute-bound); "
          f"{'fits' if result.fits else 'does NOT fit'} in HBM. The BERT paper: about 30 min "
          "on a single Cloud TPU.")
    return 0 if result.fits else 2


def main(argv=None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    config = load_config_file(args.config)
    check_keys(config, squad_template(config.model.preset))
    apply_overrides(config, overrides)
    if args.target:
        return estimate_on_target(config, args.config, args.target)
    if args.eval_every:
        config.train.checkpoint_every = args.eval_every
        config.train.keep_checkpoints = 1000
    start = time.perf_counter()
    outcome = run_squad(config, args.workdir)
    wall_seconds = time.perf_counter() - start
    summary, steps = outcome.summary, outcome.summary["steps"]
    curve = []
    if args.eval_every:
        checkpoints = Checkpointer(os.path.join(args.workdir, "checkpoints"))
        for step in checkpoints.steps():
            if step < steps:
                _, scores = score_params(outcome.model, outcome.trained,
                                         checkpoints.restore_params(step), outcome.data,
                                         config.task)
                curve.append({"step": step, **scores})
    curve.append({"step": steps, "exact_match": summary["exact_match"], "f1": summary["f1"]})
    reached = next((c for c in curve if c["f1"] >= args.target_f1), None)
    device = jax.devices()[0]
    report = {
        "hardware": f"{jax.device_count()} x {device.device_kind} ({device.platform})",
        "config": args.config, "overrides": overrides,
        "max_seq_length": config.task.max_seq_length, "batch_size": config.train.batch_size,
        "steps": steps, "epochs": steps * config.train.batch_size / summary["train_windows"],
        "train_seconds": summary["train_seconds"],
        "wall_seconds_to_end": wall_seconds,
        "target_f1": args.target_f1,
        "seconds_to_target_f1": None if reached is None else
        summary["train_seconds"] * reached["step"] / steps,
        "train_examples_per_sec": summary["train_examples_per_sec"],
        "mfu": summary["mfu"],
        "exact_match": summary["exact_match"], "f1": summary["f1"],
        "baseline_first_sentence": summary["baseline_first_sentence"],
        "f1_curve": curve,
    }
    with open(os.path.join(args.workdir, "timing.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    print("\npublished references (SQuAD v1.1 dev F1, fine-tuning time):")
    for name, hardware, f1, duration in REFERENCES:
        print(f"  {name:48s} {hardware:20s} F1 {f1:5.1f}  {duration}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
