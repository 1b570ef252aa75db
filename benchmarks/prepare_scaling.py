"""Corpus preparation at scale: peak memory against corpus size, throughput against workers.

Corpora are built from the shared Shakespeare texts (`../shared/data/text/openshakespeare`,
read in place) and written outside the repository (`--out`, default under /tmp): files of
1 MB, each a different seeded draw of documents (runs of 30 consecutive paragraphs of a
play from a random start), so a corpus 4x larger holds 4x as many distinct files rather
than one file repeated.

Each measurement is a fresh process preparing GPT examples (configs/gpt2_tiny.py, 128
tokens a row), as `lmscale data prepare` does, with peak RSS sampled every 20 ms over the
whole process tree (the process and every descendant, so Beam's worker processes count):

- memory: the full preparation, tokenizer training included (on a bounded sample of
  `--sample-lines` lines), in process, for each corpus size; then the growth from the
  smallest corpus to the largest;
- throughput: example building only (a tokenizer trained beforehand), MB of source text
  per second of the preparation call (imports excluded), in process and on Beam's
  FnApiRunner with each `--workers` count (Beam's times include starting its workers),
  with the CPU seconds the whole process tree spent (imports included): on a machine
  shared with other work, CPU seconds per MB say what the work costs, wall seconds what
  the machine gave.

    python benchmarks/prepare_scaling.py --sizes-mb 5 20 --workers 1 2

prints a table; `--json FILE` also writes the rows.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import threading
import time

import numpy as np
import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAKESPEARE = os.path.join(ROOT, "..", "shared", "data", "text", "openshakespeare")
CONFIG = os.path.join(ROOT, "configs", "gpt2_tiny.py")
FILE_MB = 1.0
PARAGRAPHS_PER_DOCUMENT = 30


def shakespeare_paragraphs() -> list[list[str]]:
    """Each play's paragraphs (blank-line separated), in order."""
    from lmscale.data.corpus import split_blank_lines

    paths = sorted(glob.glob(os.path.join(SHAKESPEARE, "*.txt")))
    if not paths:
        sys.exit(f"no Shakespeare texts under {os.path.abspath(SHAKESPEARE)}")
    plays = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            plays.append(split_blank_lines(f.read()))
    return plays


def write_corpus(folder: str, size_mb: float, plays: list[list[str]]) -> str:
    """`size_mb` MB of 1 MB files under `folder`; file k is seeded with k, so a larger
    corpus extends a smaller one with new files. Returns the glob of its files."""
    os.makedirs(folder, exist_ok=True)
    for k in range(int(np.ceil(size_mb / FILE_MB))):
        path = os.path.join(folder, f"part-{k:05d}.txt")
        if os.path.exists(path):
            continue
        rng = np.random.default_rng(k)
        documents, size = [], 0
        while size < FILE_MB * 1e6:
            play = plays[int(rng.integers(len(plays)))]
            start = int(rng.integers(max(1, len(play) - PARAGRAPHS_PER_DOCUMENT)))
            document = "\n".join(play[start:start + PARAGRAPHS_PER_DOCUMENT])
            documents.append(document)
            size += len(document.encode("utf-8")) + 2
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write("\n\n".join(documents) + "\n")
        os.replace(path + ".tmp", path)
    return os.path.join(folder, "*.txt")


def tree_rss(process: psutil.Process) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # exited between listing and reading
            pass
    return total


def measure(args: list[str]) -> dict:
    """Run a child preparation; its JSON result plus the tree's peak RSS (MB) and CPU
    seconds (user + system of the child and every descendant it waited for: Beam's
    workers included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen([sys.executable, __file__, "--child", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    handle = psutil.Process(proc.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, tree_rss(handle))
            except psutil.Error:
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"child failed ({args}):\n{err[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**json.loads(out.strip().splitlines()[-1]), "peak_rss_mb": peak / 2**20,
            "cpu_seconds": cpu}


def child(argv: list[str]) -> None:
    """One preparation in this process; prints {"seconds", "examples"} as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--override", action="append", default=[])
    args = parser.parse_args(argv)
    import logging

    from lmscale.config import apply_overrides, load_config_file
    from lmscale.data.pretrain import prepare_pretraining_data
    from lmscale.models import ModelConfig

    logging.basicConfig(level=logging.WARNING)
    config = load_config_file(CONFIG)
    apply_overrides(config, [f"data.sources=['{args.corpus}']",
                             "data.document_split=blank_line", *args.override])
    model = ModelConfig.from_dict(config.model.to_dict())
    start = time.perf_counter()
    data = prepare_pretraining_data(config.data, model, args.workdir, config.data.seq_len,
                                    config.data.max_predictions_per_seq)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "examples": len(data.train) + len(data.held_out)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/lmscale-prepare-scaling")
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[5, 20])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sample-lines", type=int, default=20_000,
                        help="data.tokenizer_sample_sentences for the memory runs")
    parser.add_argument("--shard-mb", type=float, default=2.0, help="data.shard_mb")
    parser.add_argument("--json", default="", help="also write the rows to this file")
    args = parser.parse_args()

    plays = shakespeare_paragraphs()
    corpora = {size: write_corpus(os.path.join(args.out, f"corpus-{size:g}MB"), size, plays)
               for size in args.sizes_mb}
    common = [f"data.shard_mb={args.shard_mb}", "model.vocab_size=512"]
    runs = os.path.join(args.out, f"runs-{os.getpid()}")
    rows = []
    load = os.getloadavg()[0]
    for size, corpus in corpora.items():  # memory: everything, tokenizer training included
        result = measure(["--corpus", corpus, "--workdir", os.path.join(runs, f"mem-{size:g}"),
                          *[f"--override={o}" for o in common],
                          f"--override=data.tokenizer_sample_sentences={args.sample_lines}"])
        rows.append({"kind": "memory", "size_mb": size, "runner": "in_process", **result})
    tokenizer = os.path.join(runs, f"mem-{args.sizes_mb[0]:g}", "tokenizer", "spm.model")
    largest = max(args.sizes_mb)
    runners = [("in_process", [])] + [("beam", ["data.prepare_runner=beam",
                                                 f"data.prepare_workers={n}"])
                                       for n in args.workers]
    for name, overrides in runners:  # throughput: examples only, on the largest corpus
        workers = overrides[1].split("=")[1] if overrides else "-"
        result = measure(["--corpus", corpora[largest],
                          "--workdir", os.path.join(runs, f"tp-{name}-{workers}"),
                          *[f"--override={o}" for o in
                            [*common, f"data.tokenizer={tokenizer}", *overrides]]])
        rows.append({"kind": "throughput", "size_mb": largest, "runner": name,
                     "workers": workers, **result,
                     "mb_per_s": largest / result["seconds"]})
    load = max(load, os.getloadavg()[0])

    print(f"\n{os.cpu_count()} cores; load average (1 min) up to {load:.2f} during the runs")
    print(f"{'measure':<11}{'corpus':>8}{'runner':>12}{'workers':>8}{'seconds':>9}"
          f"{'MB/s':>7}{'CPU s':>7}{'examples':>10}{'peak RSS':>10}")
    for r in rows:
        rate = f"{r['mb_per_s']:.2f}" if "mb_per_s" in r else "-"
        print(f"{r['kind']:<11}{r['size_mb']:>6g}MB{r['runner']:>12}{r.get('workers', '-'):>8}"
              f"{r['seconds']:>9.1f}{rate:>7}{r['cpu_seconds']:>7.1f}{r['examples']:>10,}"
              f"{r['peak_rss_mb']:>8.0f}MB")
    memory = [r for r in rows if r["kind"] == "memory"]
    small, large = memory[0], memory[-1]
    growth = large["peak_rss_mb"] / small["peak_rss_mb"] - 1
    print(f"peak RSS, {large['size_mb']:g} MB vs {small['size_mb']:g} MB corpus "
          f"({large['size_mb'] / small['size_mb']:.0f}x): {growth:+.1%}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "rss_growth": growth, "load_average": load}, f, indent=1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        main()
