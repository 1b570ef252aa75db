#!/usr/bin/env python
"""Run N JAX processes on 127.0.0.1, each with K fake CPU devices: a multi-host job on one box.

    python launch/local.py --processes 2 --devices-per-process 4 -- \\
        pretrain --config configs/gpt2_tiny.py --workdir runs/x --config.train.steps=20

Everything after `--` is an `lmscale` command line (or, with `--exec`, a whole command);
each process gets `--config.distributed.{coordinator_address,num_processes,process_id}`
appended and `XLA_FLAGS=--xla_force_host_platform_device_count=K`. Output lines are
prefixed `[pI]`. SIGTERM/SIGINT are forwarded to every child (a simulated preemption), the
first non-zero child exit status becomes ours, and a failed child stops the others, which
would otherwise wait for it in a collective until JAX's heartbeat timeout.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import portpicker

_DEVICE_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=\S*")


def lmscale_executable() -> list[str]:
    """The `lmscale` console script of the running interpreter's environment."""
    script = Path(sys.executable).with_name("lmscale")
    return [str(script) if script.exists() else "lmscale"]


def process_commands(processes: int, devices_per_process: int, args: list[str], *,
                     port: int | None = None, exec_mode: bool = False,
                     base_env: dict[str, str] | None = None,
                     ) -> list[tuple[dict[str, str], list[str]]]:
    """(env, argv) for each process, ids 0..processes-1, sharing one coordinator port."""
    if processes < 1 or devices_per_process < 1:
        raise ValueError("--processes and --devices-per-process must be at least 1")
    port = port or portpicker.pick_unused_port()
    env = dict(os.environ if base_env is None else base_env)
    other_xla = _DEVICE_COUNT_FLAG.sub("", env.get("XLA_FLAGS", "")).strip()
    env["XLA_FLAGS"] = " ".join(
        filter(None, [other_xla, f"--xla_force_host_platform_device_count={devices_per_process}"]))
    # Fake devices exist only on the CPU backend; keep a GPU box from giving each process
    # every GPU. An explicit JAX_PLATFORMS wins.
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONUNBUFFERED"] = "1"  # lines reach the [pI] prefixer as they are written
    prog = list(args) if exec_mode else lmscale_executable() + list(args)
    return [(env, prog + [f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                          f"--config.distributed.num_processes={processes}",
                          f"--config.distributed.process_id={i}"])
            for i in range(processes)]


def format_command(env: dict[str, str], argv: list[str]) -> str:
    """Shell line for --dry-run: only the variables this launcher sets, then the argv."""
    names = ("JAX_PLATFORMS", "XLA_FLAGS")
    return " ".join([f"{k}={shlex.quote(env[k])}" for k in names] + [shlex.join(argv)])


def _pump(index: int, stream, lock: threading.Lock) -> None:
    for line in stream:
        with lock:
            sys.stdout.write(f"[p{index}] {line}")
            sys.stdout.flush()


def run(commands: list[tuple[dict[str, str], list[str]]]) -> int:
    """Start every process, relay its output, wait; the first failure's status is returned."""
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace", start_new_session=True)
             for env, argv in commands]  # own sessions: a terminal's ^C reaches them via us only

    def forward(signum, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    lock = threading.Lock()
    pumps = [threading.Thread(target=_pump, args=(i, p.stdout, lock), daemon=True)
             for i, p in enumerate(procs)]
    for t in pumps:
        t.start()
    status = 0
    try:
        pending = set(range(len(procs)))
        while pending:
            for i in sorted(pending):
                try:
                    code = procs[i].wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                pending.discard(i)
                if code != 0 and status == 0:
                    status = code if code > 0 else 128 - code  # killed by signal N: 128+N
                    print(f"[launch] process {i} exited with {code}; stopping the others",
                          file=sys.stderr, flush=True)
                    forward(signal.SIGTERM, None)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for t in pumps:
        t.join()
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s [options] -- LMSCALE_ARGS...")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--devices-per-process", type=int, default=4)
    parser.add_argument("--port", type=int, help="coordinator port (default: a free one)")
    parser.add_argument("--exec", dest="exec_mode", action="store_true",
                        help="the arguments are a whole command, not `lmscale` arguments")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    if not args:
        parser.error("nothing to run: give the command after --")
    commands = process_commands(ns.processes, ns.devices_per_process, args,
                                port=ns.port, exec_mode=ns.exec_mode)
    if ns.dry_run:
        for env, cmd in commands:
            print(format_command(env, cmd))
        return 0
    return run(commands)


if __name__ == "__main__":
    sys.exit(main())
