"""`lmscale <verb>`: parses flags and calls the layers below. Exit codes: 0 success,
2 bad input or configuration, 1 internal error."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback

from lmscale.errors import InputError


def _load_config(path: str, overrides: list[str], template=None):
    """`template(preset)` gives every valid key (default: the pretraining config). A
    `mesh.tensor` size the model's heads or MLP width cannot be split over is refused here
    (unless it is -1, or the shape comes from `init.checkpoint`)."""
    from lmscale.config import apply_overrides, check_keys, load_config_file
    from lmscale.models.config import ModelConfig, check_tensor_parallel
    from lmscale.train.defaults import pretrain_config

    config = load_config_file(path)
    if "model" in config and "preset" in config.model:
        check_keys(config, (template or pretrain_config)(config.model.preset))
    apply_overrides(config, overrides)
    tensor = config.get("mesh", {}).get("tensor", 1)
    from_checkpoint = bool(config.get("init", {}).get("checkpoint"))
    if "model" in config and tensor > 1 and not from_checkpoint:
        check_tensor_parallel(ModelConfig.from_dict(config.model.to_dict()), tensor)
    return config


def _count_params(config) -> dict:
    """Counts of the real vocabulary (the published sizes), and `padding`: the extra
    vocabulary rows' parameters at the config's `mesh.tensor` (1 when it is -1)."""
    import dataclasses

    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lmscale.models import GPT, BertModel, ModelConfig

    def counts(cfg: ModelConfig) -> tuple[int, int]:
        ids = jnp.zeros((1, 8), jnp.int32)
        if cfg.family == "gpt":
            shapes = jax.eval_shape(lambda: GPT(cfg).init(jax.random.key(0), ids))
        else:  # encoder + pooler: what BERT's published sizes count
            shapes = jax.eval_shape(lambda: BertModel(cfg).init(jax.random.key(0), ids, ids,
                                                                ids))
        total = embedding = 0
        for path, leaf in jax.tree_util.tree_flatten_with_path(nn.unbox(shapes))[0]:
            size = int(np.prod(leaf.shape))
            total += size
            if jax.tree_util.keystr(path).endswith("['embedding']"):
                embedding += size
        return total, embedding

    cfg = ModelConfig.from_dict(config.model.to_dict())
    tensor = max(1, config.get("mesh", {}).get("tensor", 1))
    padded = cfg.for_tensor_parallel(tensor)
    total, embedding = counts(dataclasses.replace(cfg, vocab_multiple=1))
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding,
            "padding": counts(padded)[0] - total, "padded_vocab_size": padded.padded_vocab_size,
            "tensor": tensor}


def cmd_pretrain(args, overrides) -> int:
    from lmscale.tasks.samples import end_of_run_samples
    from lmscale.train.pretrain import pretrain

    config = _load_config(args.config, overrides)
    workdir = args.workdir or os.path.join("runs", config.name)
    summary = pretrain(config, workdir, end_of_run_samples)
    print(f"\nrun directory: {workdir}  (stopped: {summary['stopped']}, step {summary['step']})")
    print(f"held-out loss {summary['eval_loss']:.4f}  unigram baseline "
          f"{summary['unigram_loss']:.4f}")
    for line in summary.get("samples", []):
        print("---\n" + line)
    return 0


def cmd_data_prepare(args, overrides) -> int:
    import shlex

    from lmscale.data.pretrain import describe_plan
    from lmscale.train.pretrain import prepare_data

    # The runner flags are config fields (data.prepare_runner, ...), so `lmscale pretrain`
    # can prepare the same way; they never change the examples or their fingerprint.
    runner = []
    if args.runner:
        runner.append(f"data.prepare_runner={args.runner}")
    if args.workers is not None:
        runner.append(f"data.prepare_workers={args.workers}")
    if args.beam_options is not None:
        runner.append(f"data.beam_options={shlex.split(args.beam_options)!r}")
    config = _load_config(args.config, runner + overrides)
    workdir = args.workdir or os.path.join("runs", config.name)
    logging.getLogger("apache_beam").setLevel(logging.WARNING)  # a line per worker event
    lines = describe_plan(config.data, workdir) if args.dry_run else prepare_data(config, workdir)
    for line in lines:
        print(line)
    return 0


def cmd_params(args, overrides) -> int:
    config = _load_config(args.config, overrides)
    counts = _count_params(config)
    padding = ""
    if counts["padding"]:
        padding = (f" (+ {counts['padding']:,} vocabulary padding: "
                   f"{counts['padded_vocab_size']:,} rows at mesh.tensor={counts['tensor']})")
    print(f"{config.name}: {counts['total']:,} parameters "
          f"({counts['embedding']:,} embedding, {counts['non_embedding']:,} non-embedding)"
          + padding)
    return 0


def cmd_bench(args, overrides) -> int:
    from lmscale.train.bench import bench_train_step
    from lmscale.train.throughput import MFU_DEFINITION, remat_recompute_fraction

    config = _load_config(args.config, overrides)
    r = bench_train_step(config, steps=args.steps, peak_flops_per_device=args.peak_tflops * 1e12,
                         profile_dir=args.profile)
    print(f"{config.name}: batch {config.train.batch_size} x {config.data.seq_len} tokens, "
          f"{config.model.compute_dtype}")
    print(f"  step time (median of {args.steps}) {r.step_seconds * 1e3:.1f} ms  "
          f"(compile {r.compile_seconds:.1f} s)")
    print(f"  tokens/s {r.tokens_per_sec:,.0f}  examples/s {r.examples_per_sec:,.1f}")
    print(f"  model TFLOP/s {r.model_flops_per_sec / 1e12:.3f}  peak "
          f"{r.peak_flops_per_sec / 1e12:.3f}  MFU {r.mfu:.1%}")
    recompute = remat_recompute_fraction(config.model.remat_policy)
    print(f"  rematerialisation ({config.model.remat_policy}) adds ~{recompute:.0%} FLOPs of "
          f"recompute, not in MFU: hardware FLOPs utilisation ~{r.mfu * (1 + recompute):.1%}")
    print(f"  {MFU_DEFINITION}")
    if args.profile:
        from lmscale.train.bench import PROFILED_STEPS
        from lmscale.train.profile import top_operations

        print(f"  busiest operations (trace of {PROFILED_STEPS} steps in {args.profile}):")
        for name, ms, share in top_operations(args.profile, PROFILED_STEPS):
            print(f"    {ms:10.2f} ms/step  {share:6.1%}  {name}")
    return 0


def cmd_plan(args, overrides) -> int:
    # Compiling for a TPU topology needs no accelerator; keep JAX off any local one.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from lmscale.config import load_config_file
    from lmscale.parallel.topology import parse_target
    from lmscale.plan.planner import plan
    from lmscale.plan.recipe import config_kind
    from lmscale.plan.report import plan_json, plan_text, search_text

    config = _load_config(args.config, overrides,
                          _template_for(config_kind(load_config_file(args.config))))
    target = parse_target(args.target, args.slices)
    if args.search:
        from lmscale.models.config import REMAT_POLICIES
        from lmscale.plan.search import search

        params = _count_params(config)["total"]
        remat = tuple(args.remat.split(","))
        unknown = set(remat) - set(REMAT_POLICIES)
        if unknown:
            raise InputError(f"--remat {sorted(unknown)}: choose from {REMAT_POLICIES}")
        outcomes = search(config, target, params, args.max_tensor, remat,
                          progress=lambda c: print(f"  trying {c}", file=sys.stderr, flush=True))
        print(search_text(outcomes))
        return 0 if any(o.plan for o in outcomes) else 2
    result = plan(config, target, compile_eval=not args.no_eval)
    print(json.dumps(plan_json(result), indent=2) if args.json else plan_text(result))
    if not result.fits:
        print(f"lmscale: error: does not fit: {result.binding.peak_bytes:,} bytes per device "
              f"needed, {result.hbm_bytes:,} available", file=sys.stderr)
        return 2
    return 0


def _template_for(kind: str):
    """The config template (every valid key) of a pretraining or fine-tuning config."""
    if kind == "squad":
        from lmscale.tasks.squad import squad_template
        return squad_template
    if kind == "classify":
        from lmscale.tasks.classify import classify_template
        return classify_template
    if kind == "lm":
        from lmscale.tasks.lm_finetune import lm_finetune_template
        return lm_finetune_template
    return None


def cmd_tokenizer_train(args, overrides) -> int:
    from lmscale.data.tokenizer import (
        SentencePieceTokenizer, TokenizerTrainSpec, train_sentencepiece,
    )

    path = train_sentencepiece(TokenizerTrainSpec(inputs=tuple(args.input),
                                                  vocab_size=args.vocab_size,
                                                  model_type=args.model_type), args.output)
    tok = SentencePieceTokenizer(path)
    print(f"wrote {path}: {tok.vocab_size} pieces; [PAD]={tok.pad_id} [CLS]={tok.cls_id} "
          f"[SEP]={tok.sep_id} [MASK]={tok.mask_id} <|endoftext|>={tok.eot_id}")
    return 0


def cmd_eval_squad(args, overrides) -> int:
    from lmscale.tasks.squad_metric import evaluate_squad_file

    print(json.dumps(evaluate_squad_file(args.data, args.predictions)))
    return 0


def cmd_export(args, overrides) -> int:
    from lmscale.convert.pretrained import load_pretrained, save_pretrained

    pretrained = load_pretrained(args.workdir)
    save_pretrained(args.out, pretrained.config, pretrained.params, pretrained.tokenizer_files)
    print(f"wrote the parameters, model config and tokenizer of {args.workdir} to {args.out}")
    return 0


def cmd_convert_hf(args, overrides) -> int:
    from lmscale.convert.pretrained import convert_hf

    absent = convert_hf(args.model_dir, args.out)
    print(f"wrote {args.out}")
    if absent:
        print(f"not in the source, initialised afresh when a model needs them: "
              f"{', '.join(absent)}")
    return 0


def cmd_convert_to_hf(args, overrides) -> int:
    from lmscale.convert.pretrained import export_hf

    architecture = export_hf(args.checkpoint, args.out)
    print(f"wrote {args.out} ({architecture}: model.safetensors, config.json, tokenizer files)")
    return 0


def _finetune(args, overrides, template, run) -> int:
    config = _load_config(args.config, overrides, template)
    workdir = args.workdir or os.path.join("runs", config.name)
    summary = run(config, workdir)
    print(f"\nrun directory: {workdir}")
    print(json.dumps({k: v for k, v in summary.items() if k != "new_parameters"}, indent=2))
    return 0


def cmd_finetune_squad(args, overrides) -> int:
    from lmscale.tasks.squad import run_squad, squad_template

    return _finetune(args, overrides, squad_template,
                     lambda config, workdir: run_squad(config, workdir).summary)


def cmd_finetune_classify(args, overrides) -> int:
    from lmscale.tasks.classify import classify_template, run_classify

    return _finetune(args, overrides, classify_template, run_classify)


def cmd_finetune_lm(args, overrides) -> int:
    from lmscale.tasks.lm_finetune import lm_finetune_template, run_lm_finetune

    return _finetune(args, overrides, lm_finetune_template, run_lm_finetune)


def _mesh_sizes(text: str) -> dict[str, int]:
    """'data=2,tensor=4' -> {'data': 2, 'tensor': 4}."""
    try:
        return {k: int(v) for k, v in (item.split("=") for item in text.split(",") if item)}
    except ValueError:
        raise InputError(f"--mesh {text!r} must look like data=2,fsdp=1,tensor=4") from None


def cmd_generate(args, overrides) -> int:
    from lmscale.models.generation import Sampling
    from lmscale.tasks.decoder import load_decoder

    generator = load_decoder(args.checkpoint).generator(_mesh_sizes(args.mesh))
    sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed)
    outputs = generator.generate(args.prompt, args.max_new_tokens, sampling, args.stop,
                                 use_cache=not args.no_cache)
    for prompt, out in zip(args.prompt, outputs):
        print(f"--- [{out.stopped}, {len(out.token_ids)} tokens]\n{prompt}{out.text}")
    return 0


def cmd_eval_perplexity(args, overrides) -> int:
    from lmscale.tasks.gpt_eval import run_perplexity

    result, path = run_perplexity(args.checkpoint, args.text, args.window, args.stride,
                                  _mesh_sizes(args.mesh), args.batch_size)
    print(f"{result['text']}: {result['tokens']:,} tokens, {result['words']:,} words, "
          f"window {result['window']} stride {result['stride']}")
    print(f"  token perplexity {result['token_perplexity']:.3f}  word perplexity "
          f"{result['word_perplexity']:.3f}  bits/byte {result['bits_per_byte']:.4f}")
    print(f"wrote {path}")
    return 0


def cmd_eval_fewshot(args, overrides) -> int:
    from lmscale.tasks.gpt_eval import FewshotSpec, fewshot_table, run_fewshot

    spec = FewshotSpec(args.task, args.data, args.pool, tuple(args.shots), args.seed,
                       args.limit, args.instruction, args.separator, args.max_new_tokens,
                       tuple(args.stop))
    results, path = run_fewshot(args.checkpoint, spec, _mesh_sizes(args.mesh),
                                args.batch_size)
    print(fewshot_table(results))
    print(f"wrote {path}")
    return 0


def cmd_scaling_table(args, overrides) -> int:
    from lmscale.scaling.history import history_table

    print(history_table())
    return 0


def cmd_scaling_fit(args, overrides) -> int:
    from lmscale import storage
    from lmscale.scaling.fit import FIT_GRIDS, fit_all, fits_to_json, read_results
    from lmscale.scaling.plots import write_plots

    fits = fit_all(read_results(args.results), bootstrap=args.bootstrap, seed=args.seed,
                   grid=FIT_GRIDS[args.grid])
    report = json.dumps(fits_to_json(fits), indent=2)
    print(report)
    out = args.out or os.fspath(storage.as_path(storage.absolute(args.results)).parent)
    paths = write_plots(fits, out)
    storage.write_text(storage.join(out, "fit.json"), report + "\n")
    print(f"wrote {storage.join(out, 'fit.json')} and {', '.join(p.name for p in paths)}",
          file=sys.stderr)
    return 0


def cmd_scaling_sweep(args, overrides) -> int:
    from lmscale import storage
    from lmscale.scaling.sweep import plan_sweep, run_sweep

    config = _load_config(args.config, overrides)
    workdir = args.workdir or os.path.join("runs", config.name)
    rows = run_sweep(config, workdir, args.max_points)
    print(f"{len(rows)} of {len(plan_sweep(config))} points finished; results in "
          f"{storage.join(workdir, 'results.csv')} and results.jsonl")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmscale", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)

    def with_config(p):
        p.add_argument("--config", required=True, help="a configs/*.py file")
        p.epilog = "Any config field can be overridden: --config.train.steps=100"
        return p

    p = with_config(verbs.add_parser("pretrain", help="pretrain BERT or GPT"))
    p.add_argument("--workdir", help="run directory (default runs/<config name>)")
    p.set_defaults(run=cmd_pretrain)

    data = verbs.add_parser("data", help="datasets").add_subparsers(dest="sub", required=True)
    p = with_config(data.add_parser(
        "prepare", help="build a config's pretraining examples",
        description="Train the tokenizer (unless data.tokenizer names one) and write every "
        "phase's examples, shard by shard, in this process or on Apache Beam; the "
        "examples are the same either way (lmscale/data/beam_prepare.py)."))
    p.add_argument("--workdir", help="run directory (default runs/<config name>)")
    p.add_argument("--runner", choices=["in_process", "beam"],
                   help="who builds the examples (data.prepare_runner; default in_process): "
                   "this process, or Beam (locally FnApiRunner with --workers processes)")
    p.add_argument("--workers", type=int, default=None,
                   help="local Beam worker processes (data.prepare_workers; 0 = one per core)")
    p.add_argument("--beam-options", default=None, metavar="FLAGS",
                   help="Beam pipeline flags (data.beam_options), e.g. '--runner="
                   "DataflowRunner --project=P --region=R --temp_location=gs://B/tmp'")
    p.add_argument("--dry-run", action="store_true",
                   help="print the shard plan and check the runner options; build nothing")
    p.set_defaults(run=cmd_data_prepare)

    p = with_config(verbs.add_parser("params", help="parameter counts of a config"))
    p.set_defaults(run=cmd_params)

    p = with_config(verbs.add_parser("bench", help="time the compiled train step"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--peak-tflops", type=float, default=0.0,
                   help="per-device peak for MFU (default: the chip table's, else measured)")
    p.add_argument("--profile", default="", metavar="DIR",
                   help="also trace a few steps with jax.profiler into DIR and print the "
                        "operations that take the most time")
    p.set_defaults(run=cmd_bench)

    p = with_config(verbs.add_parser(
        "plan", help="compile a config's step for a Cloud TPU slice: memory, FLOPs, "
        "collectives, estimated speed"))
    p.add_argument("--target", required=True,
                   help="Cloud TPU accelerator type: v4-32, v5litepod-16 (= v5e-16), v5p-128, "
                   "v6e-64, v2-8, v3-8, ...")
    p.add_argument("--slices", type=int, default=1, help="number of such slices (multislice)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--search", action="store_true",
                   help="try meshes, remat policies and micro-batch splits; rank those that fit")
    p.add_argument("--max-tensor", type=int, default=8, help="--search: largest mesh.tensor")
    p.add_argument("--remat", default="none,dots_no_batch,full",
                   help="--search: remat policies to try, comma-separated")
    p.add_argument("--no-eval", action="store_true", help="skip compiling the eval step")
    p.set_defaults(run=cmd_plan)

    tok = verbs.add_parser("tokenizer", help="tokenizers").add_subparsers(dest="sub", required=True)
    p = tok.add_parser("train", help="train a SentencePiece model")
    p.add_argument("--input", nargs="+", required=True, help="text files or globs")
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--model-type", default="unigram", choices=["unigram", "bpe"])
    p.add_argument("--output", required=True, help="output prefix (writes PREFIX.model)")
    p.set_defaults(run=cmd_tokenizer_train)

    p = verbs.add_parser("export", help="parameters-only checkpoint of a run, for fine-tuning")
    p.add_argument("--workdir", required=True, help="an lmscale pretrain run directory")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(run=cmd_export)

    conv = verbs.add_parser("convert", help="checkpoint conversion").add_subparsers(
        dest="sub", required=True)
    p = conv.add_parser("hf", help="Hugging Face BERT or GPT-2 directory (config.json "
                        "model_type) -> lmscale pretrained format")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(run=cmd_convert_hf)
    p = conv.add_parser("to-hf", help="lmscale checkpoint -> Hugging Face BERT or GPT-2 directory")
    p.add_argument("--checkpoint", required=True,
                   help="lmscale export/convert output or an lmscale pretrain run directory")
    p.add_argument("--out", required=True)
    p.set_defaults(run=cmd_convert_to_hf)

    ft = verbs.add_parser("finetune", help="fine-tune a pretrained model").add_subparsers(
        dest="sub", required=True)
    for name, run, help_text in (
            ("squad", cmd_finetune_squad, "SQuAD v1.1 span extraction"),
            ("classify", cmd_finetune_classify, "sentence classification (TSV/JSONL/tfds)"),
            ("lm", cmd_finetune_lm, "GPT on JSONL prompt/completion pairs")):
        p = with_config(ft.add_parser(name, help=help_text))
        p.add_argument("--workdir", help="run directory (default runs/<config name>)")
        p.set_defaults(run=run)

    ev = verbs.add_parser("eval", help="evaluation").add_subparsers(dest="sub", required=True)
    p = ev.add_parser("squad", help="SQuAD v1.1 EM/F1 of a predictions file")
    p.add_argument("--data", required=True)
    p.add_argument("--predictions", required=True)
    p.set_defaults(run=cmd_eval_squad)

    def gpt_checkpoint(p):
        p.add_argument("--checkpoint", required=True, help="a GPT run, export or HF directory")
        p.add_argument("--mesh", default="data=-1", help="mesh sizes, e.g. data=2,tensor=4")
        return p

    p = gpt_checkpoint(ev.add_parser("perplexity", help="sliding-window perplexity"))
    p.add_argument("--text", required=True, help="a UTF-8 text file")
    p.add_argument("--window", type=int, default=0, help="default: the model's context")
    p.add_argument("--stride", type=int, default=0, help="default: half the window")
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(run=cmd_eval_perplexity)
    p = gpt_checkpoint(ev.add_parser("fewshot", help="zero/one/few-shot evaluation "
                                     "(docs/evaluation.md)"))
    p.add_argument("--task", required=True, help="a JSONL task file, or sst2 / cloze")
    p.add_argument("--data", default="", help="the input file of an sst2/cloze task")
    p.add_argument("--pool", default="", help="examples demonstrations are drawn from")
    p.add_argument("--shots", type=int, nargs="+", default=[0], help="K values, e.g. 0 1 4")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="first N examples (0 = all)")
    p.add_argument("--instruction", default=None, help="default: the adapter's, or none")
    p.add_argument("--separator", default="\n\n")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--stop", nargs="*", default=["\n"])
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(run=cmd_eval_fewshot)

    p = gpt_checkpoint(verbs.add_parser("generate", help="continue prompts with a GPT"))
    p.add_argument("--prompt", action="append", required=True, help="repeat for a batch")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    p.add_argument("--no-cache", action="store_true",
                   help="re-run the full forward pass per token (for comparison)")
    p.set_defaults(run=cmd_generate)

    sc = verbs.add_parser("scaling", help="scaling-law experiments").add_subparsers(
        dest="sub", required=True)
    p = sc.add_parser("table", help="parameter counts of historical LMs from their shapes")
    p.set_defaults(run=cmd_scaling_table)
    p = sc.add_parser("fit", help="fit scaling laws to a results table, write plots")
    p.add_argument("--results", required=True, help="CSV or JSONL with columns N, D, loss")
    p.add_argument("--out", help="plot and fit.json directory (default: the results' folder)")
    p.add_argument("--bootstrap", type=int, default=200, help="resamples for the intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", default="full", choices=["full", "coarse"],
                   help="L-BFGS starts: Hoffmann et al.'s 4,500 (full) or 243 (coarse, "
                   "~20x faster)")
    p.set_defaults(run=cmd_scaling_fit)
    p = with_config(sc.add_parser("sweep", help="run or resume a scaling sweep"))
    p.add_argument("--workdir", help="sweep directory (default runs/<config name>)")
    p.add_argument("--max-points", type=int, default=None,
                   help="train at most this many unfinished points, then stop")
    p.set_defaults(run=cmd_scaling_sweep)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    overrides = [a[len("--config."):] for a in rest if a.startswith("--config.")]
    unknown = [a for a in rest if not a.startswith("--config.")]
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("absl", "jax._src", "orbax", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.run(args, overrides)
    except InputError as err:
        print(f"lmscale: error: {err}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - the catch-all that maps bugs to exit code 1
        traceback.print_exc()
        return 1


def entry_point() -> None:
    """The `lmscale` command: the process's allocator set up before JAX starts
    (`lmscale.host_memory`), then `main`. Tests call `main` in their own process instead."""
    from lmscale.host_memory import keep_freed_memory

    keep_freed_memory()
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
