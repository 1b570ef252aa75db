"""lmscale's train step against two Hugging Face peers on this CPU host, at the same shapes,
in one run: one table of seconds per step, with lmscale's speed-up over each peer.

    python benchmarks/cpu_side_by_side.py                        # both shapes, both dtypes
    python benchmarks/cpu_side_by_side.py --seq 512              # or --batch 16
    python benchmarks/cpu_side_by_side.py --out runs/side.json --table runs/side.txt
    python benchmarks/cpu_side_by_side.py --quick                # tiny shapes, code paths only

Shapes: GPT-2 small (12 layers, d 768, 12 heads, vocab 50,257; causal-LM loss) and
BERT-Base (12 layers, d 768, 12 heads, d_ff 3,072, vocab 30,522; MLM at ceil(15% of the
sequence) masked positions per row, 20 at 128, plus NSP), sequence 128, batch 4.

Implementations, a fresh process for each at each shape and dtype (benchmarks/peers/), timed alike
(benchmarks/peers/step_timing.py: the first step compiles and is reported apart, then the
median of --steps steps after --warmup). The workers of one shape and dtype are alive
together and take their timed steps in turn (lmscale, HF Flax, HF PyTorch, lmscale, ...),
each while the others wait, so a host whose speed drifts by more than the gaps between
implementations (this repository's does) slows all of them alike; --one-at-a-time runs
them one after another instead:
  - lmscale: the step `lmscale bench` builds (benchmarks/peers/lmscale_step.py);
  - HF Flax: transformers 4.57.6's Flax models + optax AdamW in one jitted step with donated
    state, on lmscale's own jax/flax/optax, in a virtual environment built on first use
    (--peer-venv; transformers 4.57.6 cannot share lmscale's tokenizers pin);
  - HF PyTorch: transformers 5 + CPU torch, fused AdamW, every core (`pip install -e
    '.[peers]'`).
All three: AdamW, gradient clipping at 1.0 (lmscale's recipe and HF Trainer's default),
dropout 0, float32 parameters; bfloat16 = bf16 compute (Flax `dtype`, torch autocast).

lmscale's processes keep freed memory for reuse, as the `lmscale` command does
(`lmscale.host_memory`: XLA allocates a step's temporaries afresh on every run, and glibc
would map them anew each time). The peers run with glibc's defaults, as their users run
them; `--peers-keep-freed-memory` gives them the same settings (GLIBC_TUNABLES).

A speed-up is peer s/step / lmscale s/step (above 1: lmscale is faster); "best dtypes"
compares each implementation at its own fastest dtype. "Others' CPU" is the share of the
machine's CPU time that other processes took while the steps were timed: above ~5% the
numbers are contaminated (on a 2-core host a busy neighbour can slow OpenMP several-fold).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from typing import IO

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.join(HERE, "peers")
sys.path.insert(0, PEERS)
from step_timing import (  # noqa: E402
    DTYPES, READY, STEP, cpu_seconds, default_predictions)

from lmscale.host_memory import GLIBC_TUNABLES  # noqa: E402

FLAX_REQUIREMENTS = os.path.join(PEERS, "requirements-flax.txt")
DEFAULT_PEER_VENV = os.path.join(os.path.expanduser("~"), ".cache", "lmscale", "peer-flax")
# name -> (lmscale preset, title)
SHAPES = {"gpt2": ("gpt2", "GPT-2 small shape"), "bert": ("bert-base", "BERT-Base shape")}
# impl -> (worker script, column title)
IMPLS = {"lmscale": ("lmscale_step.py", "lmscale"),
         "hf-flax": ("hf_flax_step.py", "HF Flax"),
         "hf-torch": ("hf_torch_step.py", "HF PyTorch")}
PEER_IMPLS = ("hf-flax", "hf-torch")
QUICK = dict(layers=2, d_model=64, heads=2, d_ff=256, vocab=512, seq=32, batch=2)
# Before each worker's step the driver waits for the machine to go quiet (at most
# SETTLE_MAX_SECONDS): after a step the kernel goes on freeing the step's memory (its mm
# workqueue took up to 10% of the CPU during the next worker's step at 16 x 128 with a fixed
# 0.2 s pause), and thread pools may spin before they sleep: work that would otherwise be
# charged to whoever steps next. On 2 cores at 100 clock ticks a second, a quiet window is
# one in which no tick was busy.
SETTLE_WINDOW_SECONDS, SETTLE_BUSY_SHARE, SETTLE_MAX_SECONDS = 0.1, 0.05, 3.0
CONTAMINATED = 0.05  # others' CPU share above which a timing is not trusted
NOTES = (
    "BERT: Hugging Face's MLM head computes logits at all sequence positions (the loss "
    "keeps only the masked ones); lmscale gathers the masked positions first and projects "
    "only those onto the vocabulary.",
    "GPT-2: lmscale pads the vocabulary to a multiple of 128 (50,257 -> 50,304; padded "
    "logits masked) and scores all positions against separate targets; Hugging Face scores "
    "positions 1..T-1 of the input (its label shift). Both compute logits at every position.",
    "Executed GFLOP/step (PaLM accounting, 6N + 12·L·T·d per token, vocabulary projection "
    "where each implementation computes it) is in the JSON; the table compares time only.",
)


@dataclasses.dataclass(frozen=True)
class Shape:
    key: str
    family: str
    layers: int
    d_model: int
    heads: int
    d_ff: int
    vocab: int
    max_len: int
    seq: int
    batch: int
    predictions: int  # BERT masked positions per row; 0 for GPT

    @property
    def title(self) -> str:
        return SHAPES[self.key][1]

    def worker_flags(self) -> list[str]:
        flags = ["--family", self.family, "--layers", self.layers, "--d-model", self.d_model,
                 "--heads", self.heads, "--d-ff", self.d_ff, "--vocab", self.vocab,
                 "--max-len", self.max_len, "--seq", self.seq, "--batch", self.batch]
        if self.predictions:
            flags += ["--predictions", self.predictions]
        return [str(f) for f in flags]


def shape_for(key: str, args: argparse.Namespace) -> Shape:
    """A preset's shape (lmscale/models/config.py PRESETS) with the command line's overrides
    (--quick's tiny dimensions first, explicit flags over them)."""
    from lmscale.models.config import PRESETS

    p = PRESETS[SHAPES[key][0]]
    dims = dict(layers=p["num_layers"], d_model=p["d_model"], heads=p["num_heads"],
                d_ff=p["d_ff"], vocab=p["vocab_size"], seq=128, batch=4)
    if args.quick:
        dims |= QUICK
    dims |= {k: getattr(args, k) for k in dims if getattr(args, k) is not None}
    bert = p["family"] == "bert"
    predictions = (args.predictions or default_predictions(dims["seq"])) if bert else 0
    return Shape(key=key, family=p["family"], max_len=max(p["max_len"], dims["seq"]),
                 predictions=predictions, **dims)


def executed_flops_per_step(shape: Shape, impl: str) -> float:
    """Training FLOPs of one step as each implementation computes it (PaLM appendix B
    accounting, `lmscale.train.throughput`): lmscale over its padded vocabulary and, for
    BERT, at the masked positions only; Hugging Face's BERT at every position."""
    from lmscale.models import ModelConfig, preset
    from lmscale.train.throughput import pretrain_flops_per_step

    cfg = ModelConfig.from_dict(preset(
        SHAPES[shape.key][0], num_layers=shape.layers, d_model=shape.d_model,
        num_heads=shape.heads, d_ff=shape.d_ff, vocab_size=shape.vocab,
        max_len=shape.max_len))
    if impl == "lmscale":
        cfg = dataclasses.replace(cfg, vocab_size=cfg.padded_vocab_size)
        return pretrain_flops_per_step(cfg, shape.batch, shape.seq, shape.predictions)
    positions = shape.seq if shape.family == "bert" else 0
    return pretrain_flops_per_step(cfg, shape.batch, shape.seq, positions)


# --- peer environments ------------------------------------------------------------------

def _requirements_digest() -> str:
    with open(FLAX_REQUIREMENTS, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def flax_peer_python(venv: str, create: bool) -> tuple[str | None, str]:
    """The Flax peer environment's python (built on first use when `create`), or None and
    why not. A stamp of requirements-flax.txt's digest makes a changed pin rebuild it."""
    python = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, ".requirements.sha256")
    want = _requirements_digest()
    if os.path.exists(python) and os.path.exists(stamp):
        with open(stamp, encoding="ascii") as f:
            if f.read().strip() == want:
                return python, ""
    if not create:
        return None, (f"no Flax peer environment at {venv} (run without --no-create-venv "
                      f"to build it)")
    if (os.path.isdir(venv) and os.listdir(venv)
            and not os.path.exists(os.path.join(venv, "pyvenv.cfg"))):
        return None, (f"{venv} exists and is not a virtual environment; give --peer-venv "
                      f"a new or empty folder")
    _log(f"building the Flax peer environment {venv} from {FLAX_REQUIREMENTS} ...")
    # --system-site-packages: the peer runs on exactly the installed jax/flax/optax.
    for command in ([sys.executable, "-m", "venv", "--clear", "--system-site-packages", venv],
                    [python, "-m", "pip", "install", "-r", FLAX_REQUIREMENTS]):
        built = subprocess.run(command, capture_output=True, text=True)
        if built.returncode:
            return None, f"{' '.join(command)} failed: {built.stderr.strip()[-2000:]}"
    with open(stamp, "w", encoding="ascii") as f:
        f.write(want + "\n")
    return python, ""


def torch_peer_python() -> tuple[str | None, str]:
    """This python, when it has the `peers` extra (looked up, not imported: torch is slow
    to import and the worker imports it anyway)."""
    try:
        versions = {name: metadata.version(name) for name in ("torch", "transformers")}
    except metadata.PackageNotFoundError as err:
        return None, f"{err.name} is not installed (pip install -e '.[peers]')"
    if int(versions["transformers"].split(".")[0]) < 5:
        return None, (f"transformers {versions['transformers']} is installed; the PyTorch "
                      f"peer is written for 5.x (pip install -e '.[peers]')")
    return sys.executable, ""


# --- running the workers ----------------------------------------------------------------

def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def worker_launch(python: str, impl: str, shape: Shape, dtype: str,
                  args: argparse.Namespace) -> tuple[list[str], dict, dict]:
    """One implementation's worker at one shape and dtype: its command, its environment, and
    the fields its row starts with."""
    # One CPU device, as a user's `lmscale bench` sees it: drop any fake-device split of the
    # host (the test suite's conftest sets one, and the environment is inherited).
    xla_flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", XLA_FLAGS=" ".join(xla_flags))
    env.setdefault("JAX_PLATFORMS", "cpu")
    if impl == "hf-flax":  # transformers 4.x would otherwise import the installed torch
        env |= {"USE_TORCH": "0", "USE_TF": "0", "USE_FLAX": "1"}
    keeps_freed = impl == "lmscale" or args.peers_keep_freed_memory
    if keeps_freed and impl != "lmscale":  # lmscale's worker sets it up itself
        env["GLIBC_TUNABLES"] = GLIBC_TUNABLES
    command = [python, os.path.join(PEERS, IMPLS[impl][0]), *shape.worker_flags(),
               "--dtype", dtype, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--clip-norm", str(args.clip_norm), "--interleave"]
    base = {"impl": impl, "shape": shape.key, "dtype": dtype,
            "load_average_1m_before": round(os.getloadavg()[0], 2),
            "malloc": "keep freed" if keeps_freed else "glibc default"}
    return command, env, base


def settle() -> float:
    """Wait until a window of SETTLE_WINDOW_SECONDS in which the machine's CPUs were busy
    less than SETTLE_BUSY_SHARE of the time, or SETTLE_MAX_SECONDS; the seconds waited."""
    start = time.perf_counter()
    busy, _ = cpu_seconds()
    while time.perf_counter() - start < SETTLE_MAX_SECONDS:
        time.sleep(SETTLE_WINDOW_SECONDS)
        busy, last = cpu_seconds()[0], busy
        if busy - last < SETTLE_BUSY_SHARE * SETTLE_WINDOW_SECONDS * os.cpu_count():
            break
    return time.perf_counter() - start


@dataclasses.dataclass
class _Worker:
    """A live worker process, talked to by step_timing's step-by-step protocol."""

    impl: str
    base: dict
    process: subprocess.Popen
    stderr: IO[str]
    killed: threading.Event  # set when the group's time ran out
    error: str = ""
    settled: list[float] = dataclasses.field(default_factory=list)  # waits before its steps

    def _fail(self) -> None:
        self.process.wait()
        self.stderr.seek(0)
        self.error = ("timed out" if self.killed.is_set() else
                      f"exit {self.process.returncode}: {self.stderr.read().strip()[-1500:]}")

    def expect(self, tag: str) -> None:
        """Read stdout up to the line starting with `tag`; if the worker ends first, record
        why."""
        for line in self.process.stdout:
            if line.startswith(tag):
                return
        self._fail()

    def step(self) -> None:
        try:
            self.process.stdin.write("step\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it has exited: `expect` records why
        self.expect(STEP)

    def finish(self) -> dict:
        """The worker's row: its JSON line (printed once stdin closes) or why it failed."""
        lines = []
        if not self.error:
            self.process.stdin.close()
            lines = [line for line in self.process.stdout if line.startswith("{")]
            if self.process.wait() or not lines:
                self._fail()
        self.process.kill()
        self.process.wait()
        self.stderr.close()
        if self.error:
            return self.base | {"status": "failed", "error": self.error}
        return (self.base | json.loads(lines[-1])
                | {"status": "ok", "settle_seconds": [round(s, 2) for s in self.settled]})


def run_group(pythons: dict[str, str], shape: Shape, dtype: str,
              args: argparse.Namespace) -> list[dict]:
    """The implementations in `pythons` at one shape and dtype, stepped in turn. Each worker
    starts, compiles and warms up while those started before it wait; then every timed step
    goes round the live workers one by one, so the host's drift hits them alike. A row per
    implementation: its JSON line, or why it failed ("timed out": the group gets
    `args.timeout` seconds per worker in all)."""
    killed = threading.Event()
    workers: list[_Worker] = []

    def kill_all():
        killed.set()
        for worker in workers:
            worker.process.kill()

    watchdog = threading.Timer(args.timeout * len(pythons), kill_all)
    watchdog.start()
    try:
        for impl, python in pythons.items():
            command, env, base = worker_launch(python, impl, shape, dtype, args)
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=(stderr := tempfile.TemporaryFile("w+")), text=True, env=env)
            workers.append(_Worker(impl, base, process, stderr, killed))
            if killed.is_set():
                process.kill()
            workers[-1].expect(READY)
        for _ in range(args.steps):
            for worker in workers:
                if not worker.error:
                    worker.settled.append(settle())
                    worker.step()
        rows = [worker.finish() for worker in workers]
    finally:
        watchdog.cancel()
        for worker in workers:
            worker.process.kill()
    alongside = sorted(pythons)
    for row in rows:
        row["stepped_with"] = [impl for impl in alongside if impl != row["impl"]]
        if row["status"] == "ok":
            flops = executed_flops_per_step(shape, row["impl"])
            row["executed_gflop_per_step"] = flops / 1e9
            row["executed_gflops_per_sec"] = flops / row["step_seconds"] / 1e9
    return rows


def run_all(args: argparse.Namespace) -> tuple[list[Shape], list[dict]]:
    pythons = {"lmscale": (sys.executable, "")}
    if "hf-torch" in args.impls:
        pythons["hf-torch"] = torch_peer_python()
    if "hf-flax" in args.impls:
        pythons["hf-flax"] = flax_peer_python(args.peer_venv, not args.no_create_venv)
    shapes = [shape_for(key, args) for key in args.shapes]
    available = {impl: pythons[impl][0] for impl in args.impls if pythons[impl][0]}
    groups = ([{impl: python} for impl, python in available.items()] if args.one_at_a_time
              else [available])
    runs = []
    for round_ in range(args.rounds):  # rounds outermost: every cell is timed once a round
        for shape in shapes:
            for dtype in args.dtypes:
                for impl in args.impls:
                    if impl not in available:
                        runs.append({"impl": impl, "shape": shape.key, "dtype": dtype,
                                     "round": round_, "status": "skipped",
                                     "error": pythons[impl][1]})
                for group in groups:
                    names = ", ".join(IMPLS[impl][1] for impl in group)
                    _log(f"round {round_ + 1}/{args.rounds}: {shape.title}, {dtype}, "
                         f"{names} ...")
                    for row in run_group(group, shape, dtype, args):
                        runs.append(row | {"round": round_})
                        _log(f"  {IMPLS[row['impl']][1]}: {_describe(row)}")
    return shapes, runs


def merge_rounds(runs: list[dict]) -> list[dict]:
    """One run per implementation, shape and dtype: the median over the rounds that
    measured it of each round's seconds per step (`round_step_seconds` keeps them all),
    the fastest and slowest single step of any round, the largest share of the CPU others
    took, or the first round's failure if none did."""
    cells: dict[tuple, list[dict]] = {}
    for run in runs:
        cells.setdefault((run["impl"], run["shape"], run["dtype"]), []).append(run)
    merged = []
    for rounds in cells.values():
        ok = [r for r in rounds if r["status"] == "ok"]
        if not ok:
            merged.append(rounds[0])
            continue
        seconds = statistics.median(r["step_seconds"] for r in ok)
        first = {k: v for k, v in ok[0].items() if k != "round"}
        merged.append(first | {
            "step_seconds": seconds,
            "step_seconds_min": min(r["step_seconds_min"] for r in ok),
            "step_seconds_max": max(r["step_seconds_max"] for r in ok),
            "tokens_per_sec": first["tokens_per_sec"] * first["step_seconds"] / seconds,
            "executed_gflops_per_sec": first["executed_gflop_per_step"] / seconds,
            "compile_seconds": statistics.median(r["compile_seconds"] for r in ok),
            "others_cpu_share": max(r["others_cpu_share"] for r in ok),
            "round_step_seconds": [r["step_seconds"] for r in ok]})
    return merged


def _describe(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['status']}: {row['error']}"
    return (f"{row['step_seconds']:.3f} s/step, {row['tokens_per_sec']:,.0f} tokens/s, "
            f"compile {row['compile_seconds']:.1f} s, others' CPU "
            f"{row['others_cpu_share']:.0%}")


# --- the table --------------------------------------------------------------------------

def _best(runs: list[dict], shape: str, impl: str) -> dict | None:
    """`impl`'s fastest measured dtype at `shape`."""
    measured = [r for r in runs if r["shape"] == shape and r["impl"] == impl
                and r["status"] == "ok"]
    return min(measured, key=lambda r: r["step_seconds"]) if measured else None


def table_rows(shapes: list[Shape], dtypes: list[str], runs: list[dict]) -> list[dict]:
    """One row per shape and dtype: each implementation's seconds per step, lmscale's
    speed-up over each peer at this dtype and at each implementation's best dtype."""
    rows = []
    for shape in shapes:
        best_lmscale = _best(runs, shape.key, "lmscale")
        for dtype in dtypes:
            here = {r["impl"]: r for r in runs if r["shape"] == shape.key
                    and r["dtype"] == dtype and r["status"] == "ok"}
            lmscale = here.get("lmscale")
            same, best = {}, {}
            for peer in PEER_IMPLS:
                if lmscale and peer in here:
                    same[peer] = here[peer]["step_seconds"] / lmscale["step_seconds"]
                best_peer = _best(runs, shape.key, peer)
                if best_lmscale and best_peer:
                    best[peer] = {
                        "speedup": best_peer["step_seconds"] / best_lmscale["step_seconds"],
                        "lmscale_dtype": best_lmscale["dtype"], "peer_dtype": best_peer["dtype"]}
            rows.append({
                "shape": shape.title, "shape_key": shape.key, "dtype": dtype,
                "batch": shape.batch, "seq": shape.seq, "predictions": shape.predictions,
                "step_seconds": {i: r["step_seconds"] for i, r in here.items()},
                "round_step_seconds": {i: r.get("round_step_seconds", [])
                                       for i, r in here.items()},
                "tokens_per_sec": {i: r["tokens_per_sec"] for i, r in here.items()},
                "compile_seconds": {i: r["compile_seconds"] for i, r in here.items()},
                "others_cpu_share": {i: r["others_cpu_share"] for i, r in here.items()},
                "executed_gflop_per_step": {i: r["executed_gflop_per_step"]
                                            for i, r in here.items()},
                "speedup_same_dtype": same, "speedup_best_dtypes": best})
    return rows


def _seconds(row: dict, impl: str, runs: list[dict]) -> str:
    if impl in row["step_seconds"]:
        spread = row["round_step_seconds"].get(impl, [])
        rounds = f"; {min(spread):.2f}-{max(spread):.2f}" if len(spread) > 1 else ""
        return (f"{row['step_seconds'][impl]:.3f} ({row['tokens_per_sec'][impl]:,.0f} "
                f"tok/s{rounds})")
    missing = [r for r in runs if r["impl"] == impl and r["shape"] == row["shape_key"]
               and r["dtype"] == row["dtype"]]
    return missing[0]["status"] if missing else "-"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_table(rows: list[dict], runs: list[dict], impls: list[str]) -> str:
    peers = [p for p in PEER_IMPLS if p in impls]
    head = ["shape (batch x seq)", "dtype"] + [f"{IMPLS[i][1]} s/step" for i in impls]
    head += [f"vs {IMPLS[p][1]}" for p in peers]
    head += [f"vs {IMPLS[p][1]}, best dtypes" for p in peers]
    head += ["compile s (" + "/".join(IMPLS[i][1] for i in impls) + ")", "others' CPU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [f"{row['shape']} ({row['batch']} x {row['seq']})", row["dtype"]]
        cells += [_seconds(row, i, runs) for i in impls]
        cells += [_ratio(row["speedup_same_dtype"].get(p)) for p in peers]
        for p in peers:
            best = row["speedup_best_dtypes"].get(p)
            cells.append("-" if best is None else f"{best['speedup']:.2f}x "
                         f"({best['lmscale_dtype']} vs {best['peer_dtype']})")
        cells.append("/".join(f"{row['compile_seconds'][i]:.1f}"
                              if i in row["compile_seconds"] else "-" for i in impls))
        shares = row["others_cpu_share"].values()
        worst = max(shares, default=None)
        cells.append("-" if worst is None else
                     f"{worst:.0%}" + (" (contaminated)" if worst > CONTAMINATED else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(shapes: list[Shape], rows: list[dict], runs: list[dict], impls: list[str],
           context: dict) -> str:
    lines = [f"CPU side by side on {context['cpu_count']} cores, lmscale at "
             f"{context['lmscale_revision']}; load average (1, 5, 15 min) before "
             f"{context['load_average_before']}, after {context['load_average_after']}", ""]
    lines.append(format_table(rows, runs, impls))
    worst = max((r["others_cpu_share"] for r in runs if r["status"] == "ok"), default=0.0)
    if worst > CONTAMINATED:
        lines += ["", f"CONTAMINATED: other processes took up to {worst:.0%} of the CPU while "
                  f"steps were timed; these times and ratios do not measure the "
                  f"implementations. Rerun on an idle machine."]
    rounds = max((len(r.get("round_step_seconds", [])) for r in runs), default=1)
    stepped = any(r.get("stepped_with") for r in runs if r["status"] == "ok")
    how = (", the implementations of a row stepped in turn in live processes (a machine that "
           "slows down slows all of them alike)" if stepped else
           ", each implementation's steps timed alone")
    per_round = (f"; over {rounds} rounds in fresh processes, the median round, and after "
                 f"the tokens/s the fastest and slowest round" if rounds > 1 else "")
    lines += ["", f"s/step: median of the timed steps{how}{per_round} (tokens/s in "
              "brackets). vs X: X's "
              "s/step / lmscale's (above 1: lmscale faster). Compile: the first step "
              "(PyTorch: its first, eager step). Others' CPU: the largest share of the "
              "machine's CPU that other processes took while any of the row's steps were "
              f"timed; above {CONTAMINATED:.0%} the ratios are not trustworthy."]
    lines += [f"- {note}" for note in NOTES]
    malloc = {}
    for r in runs:
        malloc.setdefault(r.get("malloc", "glibc default"), set()).add(IMPLS[r["impl"]][1])
    lines.append("- malloc (lmscale.host_memory): " + "; ".join(
        f"{setting} for {', '.join(sorted(names))}" for setting, names in sorted(malloc.items())))
    for shape in shapes:
        flops = {r["impl"]: r["executed_gflop_per_step"] for r in runs
                 if r["shape"] == shape.key and r["status"] == "ok"}
        if flops:
            lines.append(f"- {shape.title} executed GFLOP/step: " + ", ".join(
                f"{IMPLS[i][1]} {g:.3g}" for i, g in flops.items()))
    versions = {}
    for r in runs:
        if r["status"] == "ok":
            versions.setdefault(r["impl"], r["versions"])
    for impl, v in versions.items():
        lines.append(f"- {IMPLS[impl][1]}: " + ", ".join(f"{k} {x}" for k, x in v.items()))
    jax_versions = {tuple(v.get(k) for k in ("jax", "flax", "optax"))
                    for i, v in versions.items() if i in ("lmscale", "hf-flax")}
    if len(jax_versions) > 1:
        lines.append("- WARNING: lmscale and the Flax peer ran on different jax/flax/optax")
    for r in runs:
        if r["status"] != "ok":
            lines.append(f"- {IMPLS[r['impl']][1]} {r['shape']} {r['dtype']} {r['status']}: "
                         f"{r['error'].splitlines()[-1] if r['error'] else ''}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    csv = lambda text: [t for t in text.split(",") if t]  # noqa: E731
    parser.add_argument("--shapes", type=csv, default=list(SHAPES),
                        help=f"comma-separated, of {list(SHAPES)}")
    parser.add_argument("--dtypes", type=csv, default=list(DTYPES))
    parser.add_argument("--impls", type=csv, default=list(IMPLS),
                        help=f"comma-separated, of {list(IMPLS)}")
    parser.add_argument("--seq", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--predictions", type=int, help="BERT masked positions per row")
    parser.add_argument("--layers", type=int)
    parser.add_argument("--d-model", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--d-ff", type=int)
    parser.add_argument("--vocab", type=int)
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny shapes ({QUICK}) for a smoke test; flags override")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps, the first of which compiles")
    parser.add_argument("--clip-norm", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=1,
                        help="time every implementation, shape and dtype this many times, "
                             "round-robin, and report the median round")
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="run each implementation's worker alone, one after another, "
                             "instead of stepping the workers of a shape and dtype in turn "
                             "(less memory; the ratios then compare steps minutes apart)")
    parser.add_argument("--peers-keep-freed-memory", action="store_true",
                        help="run the peers with lmscale's malloc settings "
                             "(lmscale.host_memory.GLIBC_TUNABLES) instead of glibc's defaults")
    parser.add_argument("--timeout", type=int, default=3600,
                        help="seconds per worker (a group of workers stepped in turn gets "
                             "this times their number)")
    parser.add_argument("--peer-venv", default=DEFAULT_PEER_VENV,
                        help="the Flax peer's virtual environment (built on first use)")
    parser.add_argument("--no-create-venv", action="store_true",
                        help="skip the Flax peer unless its environment already exists")
    parser.add_argument("--out", help="write the rows (and every run) as JSON here")
    parser.add_argument("--table", help="also write the printed report here")
    args = parser.parse_args(argv)
    for name, chosen, valid in (("shapes", args.shapes, SHAPES), ("dtypes", args.dtypes, DTYPES),
                                ("impls", args.impls, IMPLS)):
        unknown = sorted(set(chosen) - set(valid))
        if unknown or not chosen:
            parser.error(f"--{name} {','.join(chosen)}: choose from {','.join(valid)}")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if "lmscale" not in args.impls:
        parser.error("--impls must include lmscale (the speed-ups are relative to it)")
    return args


def lmscale_revision() -> str:
    """The commit the lmscale being measured is at ("-dirty": with uncommitted changes)."""
    done = subprocess.run(["git", "-C", os.path.dirname(HERE), "describe", "--always",
                           "--dirty"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main(argv=None) -> int:
    args = parse_args(argv)
    before = [round(x, 2) for x in os.getloadavg()]
    revision, start = lmscale_revision(), time.time()
    shapes, round_runs = run_all(args)
    runs = merge_rounds(round_runs)
    context = {"cpu_count": os.cpu_count(), "lmscale_revision": revision,
               "load_average_before": before,
               "load_average_after": [round(x, 2) for x in os.getloadavg()],
               "wall_seconds": round(time.time() - start, 1)}
    rows = table_rows(shapes, args.dtypes, runs)
    text = report(shapes, rows, runs, args.impls, context)
    print(text)
    if args.table:
        with open(args.table, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(context | {"notes": NOTES, "rows": rows, "runs": runs,
                                 "round_runs": round_runs}, f, indent=2)
    return 0 if any(r["status"] == "ok" for r in runs if r["impl"] == "lmscale") else 1


if __name__ == "__main__":
    sys.exit(main())
