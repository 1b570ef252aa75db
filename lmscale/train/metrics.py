"""Metrics out of the loop: metrics.jsonl, TensorBoard event files, a loss-curve PNG."""

from __future__ import annotations

import io
import json
import math
import shutil
import tempfile

from tensorboardX import SummaryWriter

from lmscale import storage


class MetricsWriter:
    """Writes on the main process only; other processes get a writer that does nothing.

    A local metrics.jsonl is appended to. An object store has no append, so for a remote
    run directory the writer keeps the file's lines and rewrites the object at every write
    (one request, atomic): no line is lost, at the cost of re-sending the file, which stays
    small (one line per logged step). TensorBoard's event file is written in a local folder
    and copied the same way.
    """

    def __init__(self, workdir: str, enabled: bool = True):
        self.workdir = workdir
        self.enabled = enabled
        self.path = storage.join(workdir, "metrics.jsonl")
        self._remote = storage.is_remote(workdir)
        self._lines: list[str] = []
        if enabled and self._remote and storage.exists(self.path):
            self._lines = storage.read_text(self.path).splitlines()
        self._events = tempfile.mkdtemp(prefix="lmscale-events-") if self._remote else workdir
        self._tb = SummaryWriter(self._events) if enabled else None

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step)} | {k: float(v) for k, v in metrics.items()}
        line = json.dumps(record)
        if self._remote:
            self._lines.append(line)
            storage.write_text(self.path, "\n".join(self._lines) + "\n")
        else:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        for key, value in metrics.items():
            if math.isfinite(float(value)):
                self._tb.add_scalar(key, float(value), int(step))
        self._tb.flush()
        if self._remote:
            storage.copy_tree(self._events, self.workdir)

    def resume_at(self, step: int) -> None:
        """Drops the records of steps after `step`: the checkpoint a run resumes from does
        not hold them, and the resumed run writes them again."""
        if not self.enabled or not storage.exists(self.path):
            return
        lines = storage.read_text(self.path).splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
        if len(kept) < len(lines):
            storage.write_text(self.path, "".join(line + "\n" for line in kept))
        self._lines = kept

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            if self._remote:
                storage.copy_tree(self._events, self.workdir)
                shutil.rmtree(self._events, ignore_errors=True)


def read_metrics(path: str) -> list[dict]:
    return [json.loads(line) for line in storage.read_text(path).splitlines() if line.strip()]


def plot_loss_curve(metrics_path: str, out_png: str, baseline: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(6, 4))
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    held = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if train:
        ax.plot(*zip(*train), label="train loss")
    if held:
        ax.plot(*zip(*held), "o-", label="held-out loss")
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle="--", label="unigram baseline")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    storage.write_bytes(out_png, png.getvalue())
