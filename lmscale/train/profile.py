"""Where a step's time goes: the busiest compiled operations of a `jax.profiler` trace."""

from __future__ import annotations

import collections
import glob
import os
import re

import jax

# Events that wrap or wait for the operations rather than being one (on a CPU with several
# devices, the threads of a collective also log their rendezvous and waits).
_WRAPPERS = re.compile(r"ThunkExecutor|Await|Execute|block_until_ready|stop_trace|"
                       r"Rendezvous|rendezvous|^Wait")


def top_operations(trace_dir: str, steps: int, top: int = 15) -> list[tuple[str, float, float]]:
    """(operation, milliseconds per step, share of the traced operation time) for the `top`
    busiest operations of the newest trace under `trace_dir`, numbered copies of one
    operation (`fusion.3`, `fusion.7`) added together. Device timelines (GPU, TPU) are read
    when the trace has them; on a CPU the XLA worker threads are."""
    paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True),
                   key=os.path.getmtime)
    if not paths:
        raise FileNotFoundError(f"no jax.profiler trace (*.xplane.pb) under {trace_dir}")
    planes = list(jax.profiler.ProfileData.from_file(paths[-1]).planes)
    devices = [p for p in planes if p.name.startswith("/device:") and list(p.lines)]
    totals: collections.Counter = collections.Counter()
    for plane in devices or planes:
        for line in plane.lines:
            if not devices and not line.name.startswith("tf_XLA"):
                continue
            if devices and "Ops" not in line.name:  # "XLA Ops": one event per operation
                continue
            for event in line.events:
                if not _WRAPPERS.search(event.name):
                    totals[re.sub(r"\.\d+$", "", event.name)] += event.duration_ns
    whole = sum(totals.values()) or 1
    return [(name, ns / 1e6 / steps, ns / whole) for name, ns in totals.most_common(top)]
