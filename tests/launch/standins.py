"""Scripted stand-ins for `gcloud`, `sbatch`, `srun` and `scontrol`, put first on PATH by
tests/launch/test_launchers.py: no cloud and no SLURM cluster can be reached from a test, so
these play a scripted sequence of states and outputs and record every call.

    python standins.py ROLE ARGS...      # ROLE: gcloud, sbatch, srun or scontrol

$STANDIN_DIR holds `scenario.json` (the script, below), `calls.jsonl` (one {"role", "argv"}
per call, appended) and `state.json` (counters between calls).

gcloud: {"attempts": [ATTEMPT, ...]}, one ATTEMPT per `queued-resources create`:
    {"wait": [STATE, ...],    # what `describe` returns before any worker command, in turn
     "after": [STATE, ...],   # ... and after the first worker command (scp or ssh)
     "run": RUN,              # what `tpu-vm ssh --command='... lmscale pretrain ...'` does
     "install_exit": 0, "scp_exit": 0, "create_exit": 0}
A list's last state repeats; the state GONE makes `describe` fail as for a deleted resource.
sbatch/srun/scontrol: {"runs": [RUN, ...]}, one RUN per `srun`. `sbatch` runs the job script
at once with SLURM_JOB_ID set, its output appended to job-JOBID.out, and runs it again (with
SLURM_RESTART_COUNT) each time the job called `scontrol requeue` on itself.
RUN: {"stderr": [LINE, ...], "stdout": [LINE, ...], "exit": 0}.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

DIR = Path(os.environ["STANDIN_DIR"])
JOB_ID = "4242"


def load(name: str, default):
    path = DIR / name
    return json.loads(path.read_text()) if path.exists() else default


def save_state(state: dict) -> None:
    (DIR / "state.json").write_text(json.dumps(state))


def play(run: dict) -> int:
    for line in run.get("stderr", []):
        print(line, file=sys.stderr, flush=True)
    for line in run.get("stdout", []):
        print(line, flush=True)
    return run.get("exit", 0)


def gcloud(argv: list[str]) -> int:
    attempts = load("scenario.json", {})["attempts"]
    state = load("state.json", {"creates": 0, "workers_touched": False, "describes": 0})
    group, verb = argv[2], argv[3]  # compute tpus GROUP VERB ...
    if group == "queued-resources" and verb == "create":
        state.update(creates=state["creates"] + 1, workers_touched=False, describes=0)
        save_state(state)
        if state["creates"] > len(attempts):
            print(f"standin: no scripted attempt {state['creates']}", file=sys.stderr)
            return 99
        return attempts[state["creates"] - 1].get("create_exit", 0)
    attempt = attempts[state["creates"] - 1]
    if group == "queued-resources" and verb == "describe":
        states = attempt["after" if state["workers_touched"] else "wait"]
        current = states[min(state["describes"], len(states) - 1)]
        state["describes"] += 1
        save_state(state)
        if current == "GONE":
            print("ERROR: (gcloud) NOT_FOUND: queued resource not found", file=sys.stderr)
            return 1
        print(current)
        return 0
    if group == "queued-resources" and verb == "delete":
        return 0
    if not state["workers_touched"]:
        state.update(workers_touched=True, describes=0)
        save_state(state)
    if verb == "scp":
        return attempt.get("scp_exit", 0)
    command = next(a.split("=", 1)[1] for a in argv if a.startswith("--command="))
    if "lmscale pretrain" in command:
        return play(attempt["run"])
    if "pip install" in command:
        return attempt.get("install_exit", 0)
    return 0


def sbatch(argv: list[str]) -> int:
    script_at = next(i for i, a in enumerate(argv) if not a.startswith("-"))
    script, args = argv[script_at], argv[script_at + 1:]
    print(f"Submitted batch job {JOB_ID}")
    for restart in range(10):
        env = {**os.environ, "SLURM_JOB_ID": JOB_ID}
        if restart:
            env["SLURM_RESTART_COUNT"] = str(restart)
        save_state({**load("state.json", {}), "requeued": False})
        with open(DIR / f"job-{JOB_ID}.out", "a") as out:
            code = subprocess.run(["bash", script, *args], stdout=out, stderr=subprocess.STDOUT,
                                  env=env).returncode
        record("job", [str(restart), str(code)])
        if not load("state.json", {})["requeued"]:
            break
    return 0


def srun(argv: list[str]) -> int:
    state = load("state.json", {})
    runs = state.get("runs", 0)
    save_state({**state, "runs": runs + 1})
    return play(load("scenario.json", {})["runs"][runs])


def scontrol(argv: list[str]) -> int:
    if argv[:2] == ["requeue", JOB_ID]:
        save_state({**load("state.json", {}), "requeued": True})
    return 0


def record(role: str, argv: list[str]) -> None:
    with open(DIR / "calls.jsonl", "a") as f:
        f.write(json.dumps({"role": role, "argv": argv}) + "\n")


if __name__ == "__main__":
    role, argv = sys.argv[1], sys.argv[2:]
    record(role, argv)
    sys.exit({"gcloud": gcloud, "sbatch": sbatch, "srun": srun, "scontrol": scontrol}[role](argv))
