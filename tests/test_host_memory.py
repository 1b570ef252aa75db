"""glibc keeps a jitted function's freed temporaries, so repeated runs stop taking page faults.

Each case runs in a fresh process: the settings must be in place before JAX starts."""

import json
import os
import subprocess
import sys

import pytest

from lmscale.host_memory import OPT_OUT, keep_freed_memory

# A 64 MB temporary (the sine, before the matrix-vector product) on every run.
RUNS = 20
PROBE = f"""
import json, resource
from lmscale.host_memory import keep_freed_memory
applied = keep_freed_memory()
import jax, jax.numpy as jnp
x, v = jnp.ones((4096, 4096), jnp.float32), jnp.ones((4096,), jnp.float32)
f = jax.jit(lambda x, v: jnp.sin(x).T @ v)
faults = []
for _ in range({RUNS}):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x, v).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({{"applied": applied, "faults": faults}}))
"""
TEMPORARY_PAGES = 64 * 2**20 // 4096

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION").startswith(
        "glibc"), reason="the settings are glibc's; other C libraries are left alone")


def _probe(keep: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != OPT_OUT}
    if not keep:
        env[OPT_OUT] = "0"
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_repeated_runs_reuse_the_temporaries():
    kept, default = _probe(keep=True), _probe(keep=False)
    assert kept["applied"] and not default["applied"]

    def faulting(faults):  # runs after the first that mapped the temporary afresh
        return [f > TEMPORARY_PAGES // 2 for f in faults[1:]]

    # glibc's default maps it afresh on every run.
    assert all(faulting(default["faults"]))
    # Kept, the heap grows for a few runs, until freed blocks lie side by side and
    # coalesce into a stretch that fits the next (aligned) request; then runs reuse it.
    kept_faulting = faulting(kept["faults"])
    assert sum(kept_faulting) <= RUNS * 3 // 4, kept["faults"]
    assert sum(kept_faulting[-5:]) <= 2, kept["faults"]


def test_opt_out_changes_nothing(monkeypatch):
    monkeypatch.setenv(OPT_OUT, "0")
    assert keep_freed_memory() is False


def test_the_lmscale_command_sets_it_up_before_main(monkeypatch):
    from importlib.metadata import entry_points

    from lmscale import cli

    [script] = [e for e in entry_points(group="console_scripts") if e.name == "lmscale"]
    assert script.load() is cli.entry_point
    calls = []
    monkeypatch.setattr("lmscale.host_memory.keep_freed_memory", lambda: calls.append("keep"))
    monkeypatch.setattr(cli, "main", lambda: calls.append("main") or 0)
    with pytest.raises(SystemExit):
        cli.entry_point()
    assert calls == ["keep", "main"]
