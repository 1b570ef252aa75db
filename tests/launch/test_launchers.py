"""Launchers: the TPU VM and SLURM scripts' --dry-run output, their restart logic run against
scripted stand-ins for gcloud and SLURM (tests/launch/standins.py: no cloud or cluster is
reachable here), and launch/local.py building and really running a multi-process job on
127.0.0.1."""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"
STANDINS = Path(__file__).with_name("standins.py")
PRETRAIN_ARGS = ["--config", "configs/gpt2_small.py", "--workdir", "/mnt/runs/gpt2 small",
                 "--config.train.steps=100"]

needs_bash = pytest.mark.skipif(shutil.which("bash") is None,
                                reason="bash is needed to run the shell launchers")


def _load_local():
    spec = importlib.util.spec_from_file_location("launch_local", LAUNCH / "local.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


local = _load_local()


def _bash(script, *args, env=None):
    return subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def _standins(tmp_path, scenario, *roles):
    """Puts stand-ins for `roles` first on PATH, playing `scenario` (see standins.py)."""
    bin_dir, state = tmp_path / "bin", tmp_path / "standin"
    bin_dir.mkdir()
    state.mkdir()
    for role in roles:
        wrapper = bin_dir / role
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDINS}" {role} "$@"\n')
        wrapper.chmod(0o755)
    (state / "scenario.json").write_text(json.dumps(scenario))
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "STANDIN_DIR": str(state),
            "TPU_POLL_SECONDS": "0"}


def _calls(tmp_path, role):
    lines = (tmp_path / "standin" / "calls.jsonl").read_text().splitlines()
    return [call["argv"] for call in map(json.loads, lines) if call["role"] == role]


def _run(resumed_from=None, stopped=None, exit=0, stderr=()):
    """What one `lmscale pretrain` prints: its log and progress bar go to stderr, and its
    last lines, when it gets that far, to stdout."""
    log = [f"12:00:00 INFO resuming from step {resumed_from}"] if resumed_from else []
    log.append("train:  40%|####      | 40/100 [00:10<00:15]\rtrain:  60%|######    | 60/100")
    out = [] if stopped is None else [
        "", f"run directory: gs://bucket/runs/x  (stopped: {stopped[0]}, step {stopped[1]})",
        "held-out loss 3.1000  unigram baseline 5.2000"]
    return {"stderr": [*log, *stderr], "stdout": out, "exit": exit}


# --- Cloud TPU VM ---------------------------------------------------------------------------

@needs_bash
def test_tpu_vm_dry_run_prints_the_whole_lifecycle():
    r = _bash("tpu_vm.sh", "--dry-run", "--name", "t1", "--accelerator-type", "v5litepod-16",
              "--runtime-version", "v2-alpha-tpuv5-lite", "--project", "proj", "--",
              *PRETRAIN_ARGS, env={"TPU_ZONE": "europe-west4-b"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert all(line.startswith("+ ") for line in lines)
    create, describe, wheel, scp, install, train, delete = lines
    for flag in ("queued-resources create t1", "--node-id=t1", "--accelerator-type=v5litepod-16",
                 "--runtime-version=v2-alpha-tpuv5-lite", "--spot", "--zone=europe-west4-b",
                 "--project=proj"):
        assert flag in create
    assert "queued-resources describe t1" in describe and "state.state" in describe
    assert "pip wheel" in wheel and str(REPO) in wheel
    assert "tpu-vm scp" in scp and "--worker=all" in scp and "configs" in scp
    assert "tpu-vm ssh t1" in install and "--worker=all" in install and "pip install" in install
    assert "tpu-vm ssh t1" in train and "--worker=all" in train
    assert "lmscale pretrain --config configs/gpt2_small.py" in train
    assert r"/mnt/runs/gpt2\ small" in train  # quoted for the workers' shell
    assert "coordinator_address" not in train  # the slice is auto-detected
    assert "queued-resources delete t1" in delete and "--force" in delete  # the EXIT trap


@needs_bash
def test_tpu_vm_setup_hook_and_bad_usage():
    r = _bash("tpu_vm.sh", "--dry-run", "--setup", "mkdir -p /mnt/runs", "--", *PRETRAIN_ARGS)
    assert r.returncode == 0, r.stderr
    assert any("--worker=all" in line and "mkdir -p /mnt/runs" in line
               for line in r.stdout.splitlines())
    assert _bash("tpu_vm.sh", "--dry-run").returncode == 2  # no pretrain arguments
    bad_count = _bash("tpu_vm.sh", "--dry-run", "--max-restarts", "two", "--", *PRETRAIN_ARGS)
    assert bad_count.returncode == 2 and "--max-restarts" in bad_count.stderr
    bad = _bash("tpu_vm.sh", "--dry-run", "--bogus", "x", "--", *PRETRAIN_ARGS)
    assert bad.returncode == 2 and "--bogus" in bad.stderr and bad.stdout == ""


@needs_bash
def test_tpu_vm_dry_run_shows_the_restart():
    r = _bash("tpu_vm.sh", "--dry-run", "--name", "t1", "--max-restarts", "2", "--wheel",
              "dist/lmscale-1.0-py3-none-any.whl", "--", *PRETRAIN_ARGS)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "pip wheel" not in r.stdout  # --wheel replaces the build
    assert "dist/lmscale-1.0-py3-none-any.whl" in lines[2] and "~/lmscale-1.0" in lines[3]
    assert lines[5] == ("# after a preemption, up to 2 times: delete the slice, then repeat "
                        "from create")
    assert "queued-resources delete t1" in lines[6] and lines[6] == lines[7]  # restart, exit


def _tpu_vm(tmp_path, attempts, *flags):
    """Runs tpu_vm.sh against a gcloud that plays `attempts`, one per queued resource."""
    env = _standins(tmp_path, {"attempts": attempts}, "gcloud")
    wheel = tmp_path / "lmscale-1.0-py3-none-any.whl"
    wheel.touch()
    return _bash("tpu_vm.sh", "--name", "t1", "--wheel", str(wheel), *flags, "--",
                 *PRETRAIN_ARGS, env=env)


def _gcloud_verbs(tmp_path):
    """The gcloud calls in order: a queued-resources verb, scp, or what ssh ran."""
    verbs = []
    for argv in _calls(tmp_path, "gcloud"):
        command = next((a for a in argv if a.startswith("--command=")), "")
        verbs.append(argv[3] if argv[2] == "queued-resources" else
                     "train" if "lmscale pretrain" in command else
                     "install" if "pip install" in command else argv[3])
    return verbs


def _launcher_lines(stderr):
    return [line.removeprefix("tpu_vm.sh: ") for line in stderr.splitlines()
            if line.startswith("tpu_vm.sh: ")]


ONE_ATTEMPT = ["create", "describe", "scp", "install", "train"]


@needs_bash
def test_tpu_vm_requeues_after_a_preemption_and_resumes_until_done(tmp_path):
    r = _tpu_vm(tmp_path, [
        # Waits for capacity, runs to about step 60, then the slice is taken: ssh drops.
        {"wait": ["WAITING_FOR_RESOURCES", "ACTIVE"], "run": _run(exit=255),
         "after": ["SUSPENDED"]},
        # The same command on a fresh slice resumes from the last checkpoint and finishes.
        {"wait": ["ACTIVE"], "run": _run(resumed_from=40, stopped=("done", 100)),
         "after": ["ACTIVE"]},
    ], "--max-restarts", "2")
    assert r.returncode == 0, r.stderr
    assert _launcher_lines(r.stderr) == [
        "attempt 1 restored no checkpoint, reported no final step (exit status 255)",
        "restart 1 of 2 after preemption: the training command exited with status 255 and "
        "queued resource t1 is SUSPENDED",
        "attempt 2 resumed from step 40, stopped: done at step 100 (exit status 0)",
    ]
    assert _gcloud_verbs(tmp_path) == [
        "create", "describe", "describe", "scp", "install", "train", "describe", "delete",
        *ONE_ATTEMPT, "delete"]
    trains = [argv for argv in _calls(tmp_path, "gcloud") if "lmscale pretrain" in argv[-1]]
    assert len(trains) == 2 and trains[0] == trains[1]  # the same command both times
    assert "resuming from step 40" in r.stdout  # the workers' output is streamed


@needs_bash
def test_tpu_vm_restarts_after_every_kind_of_preemption(tmp_path):
    r = _tpu_vm(tmp_path, [
        # Preempted while waiting for capacity, before anything ran.
        {"wait": ["ACCEPTED", "SUSPENDING"], "after": ["SUSPENDED"]},
        # ssh dropped (255) a moment before the state changed: the launcher looks twice.
        {"wait": ["ACTIVE"], "run": _run(resumed_from=None, exit=255),
         "after": ["ACTIVE", "PREEMPTED"]},
        # The install failed because the resource is gone.
        {"wait": ["ACTIVE"], "install_exit": 255, "after": ["GONE"]},
        # SIGTERM reached the run, which saved and reported it; the slice still looks fine.
        {"wait": ["ACTIVE"], "run": _run(resumed_from=40, stopped=("preempted", 70)),
         "after": ["ACTIVE"]},
        {"wait": ["ACTIVE"], "run": _run(resumed_from=70, stopped=("done", 100)),
         "after": ["ACTIVE"]},
    ], "--max-restarts", "4")
    assert r.returncode == 0, r.stderr
    restarts = [line for line in _launcher_lines(r.stderr) if line.startswith("restart ")]
    assert restarts == [
        "restart 1 of 4 after preemption: queued resource t1 is SUSPENDING before the run "
        "started",
        "restart 2 of 4 after preemption: the training command exited with status 255 and "
        "queued resource t1 is PREEMPTED",
        "restart 3 of 4 after preemption: installing exited with status 255 and queued "
        "resource t1 is GONE",
        "restart 4 of 4 after preemption: the run saved and stopped at step 70 (stopped: "
        "preempted)",
    ]
    assert "attempt 5 resumed from step 70, stopped: done at step 100 (exit status 0)" in r.stderr
    assert _gcloud_verbs(tmp_path) == [
        "create", "describe", "describe", "delete",
        *ONE_ATTEMPT, "describe", "describe", "delete",
        "create", "describe", "scp", "install", "describe", "delete",
        *ONE_ATTEMPT, "delete",
        *ONE_ATTEMPT, "delete"]


@needs_bash
@pytest.mark.parametrize("exit_status, message, describes", [
    (1, "the training command exited with status 1 while queued resource t1 is ACTIVE: "
        "not a preemption, so no restart", 1),
    # A dropped connection while the slice stays ACTIVE is a network failure, not a preemption.
    (255, "the training command exited with status 255 while queued resource t1 is ACTIVE: "
          "not a preemption, so no restart", 2),
    (0, "the training command exited 0 without a final '(stopped: ...)' line", 0),
])
def test_tpu_vm_stops_on_a_failure_that_is_not_a_preemption(tmp_path, exit_status, message,
                                                           describes):
    run = _run(resumed_from=40, exit=exit_status, stderr=["Traceback (most recent call last):"])
    r = _tpu_vm(tmp_path, [{"wait": ["ACTIVE"], "run": run, "after": ["ACTIVE"]}],
                "--max-restarts", "2")
    assert r.returncode == 1
    assert _launcher_lines(r.stderr)[-1] == message
    assert not any(line.startswith("restart ") for line in _launcher_lines(r.stderr))
    assert _gcloud_verbs(tmp_path) == [*ONE_ATTEMPT, *["describe"] * describes, "delete"]


@needs_bash
def test_tpu_vm_stops_when_the_queued_resource_fails(tmp_path):
    r = _tpu_vm(tmp_path, [{"wait": ["PROVISIONING", "FAILED"], "after": ["FAILED"]}],
                "--max-restarts", "2")
    assert r.returncode == 1
    assert "queued resource t1 is FAILED while waiting for capacity" in r.stderr
    assert _gcloud_verbs(tmp_path) == ["create", "describe", "describe", "delete"]


@needs_bash
@pytest.mark.parametrize("max_restarts", [0, 2])
def test_tpu_vm_gives_up_when_the_restarts_are_used(tmp_path, max_restarts):
    preempted = {"wait": ["ACTIVE"], "run": _run(stopped=("preempted", 20)), "after": ["ACTIVE"]}
    flags = ("--max-restarts", str(max_restarts)) if max_restarts else ()  # 0 is the default
    r = _tpu_vm(tmp_path, [preempted] * (max_restarts + 1), *flags)
    assert r.returncode == 3
    assert _launcher_lines(r.stderr)[-1] == (
        "preempted: the run saved and stopped at step 20 (stopped: preempted); no restarts "
        f"left (--max-restarts {max_restarts})")
    verbs = _gcloud_verbs(tmp_path)
    assert verbs.count("create") == verbs.count("delete") == max_restarts + 1
    assert verbs == [*ONE_ATTEMPT, "delete"] * (max_restarts + 1)


@needs_bash
def test_tpu_vm_deletes_the_slice_when_stopped_while_waiting(tmp_path):
    env = _standins(tmp_path, {"attempts": [{"wait": ["WAITING_FOR_RESOURCES"], "after": []}]},
                    "gcloud")
    proc = subprocess.Popen(["bash", str(LAUNCH / "tpu_vm.sh"), "--name", "t1", "--max-restarts",
                             "2", "--", *PRETRAIN_ARGS], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env, "TPU_POLL_SECONDS": "0.2"})
    calls = tmp_path / "standin" / "calls.jsonl"
    deadline = time.monotonic() + 30
    while "describe" not in (calls.read_text() if calls.exists() else ""):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert _gcloud_verbs(tmp_path)[-1] == "delete" and "deleting t1" in err


# --- SLURM ----------------------------------------------------------------------------------

@needs_bash
def test_slurm_dry_run_prints_sbatch_and_srun():
    r = _bash("slurm.sh", "--dry-run", "--nodes", "4", "--gpus-per-node", "4",
              "--partition", "gpu", "--", *PRETRAIN_ARGS)
    assert r.returncode == 0, r.stderr
    sbatch, srun = r.stdout.splitlines()
    assert sbatch.startswith("+ sbatch ")
    for flag in ("--nodes=4", "--gpus-per-node=4", "--partition=gpu", "slurm.sbatch"):
        assert flag in sbatch
    assert srun.startswith("+ srun ") and "lmscale pretrain --config configs/gpt2_small.py" in srun
    assert "coordinator_address" not in srun  # SLURM is auto-detected


def test_slurm_script_runs_one_task_per_node_and_saves_before_the_time_limit():
    text = (LAUNCH / "slurm.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=1" in text
    assert "#SBATCH --signal=TERM@" in text and "#SBATCH --requeue" in text


@needs_bash
def test_slurm_dry_run_shows_the_resubmit():
    r = _bash("slurm.sh", "--dry-run", "--max-resubmits", "3", "--nodes", "2", "--",
              *PRETRAIN_ARGS)
    assert r.returncode == 0, r.stderr
    sbatch, srun, comment, requeue = r.stdout.splitlines()
    assert "slurm.sbatch --max-resubmits 3 --config configs/gpt2_small.py" in sbatch
    assert srun.startswith("+ srun ") and "--max-resubmits" not in srun
    assert "fewer than 3 times" in comment and requeue == "+ scontrol requeue $SLURM_JOB_ID"
    assert _bash("slurm.sh", "--dry-run", "--max-resubmits", "-1", "--", "x").returncode == 2


def _slurm(tmp_path, runs, *flags):
    """Submits with slurm.sh to stand-ins whose srun plays `runs`, one per job run. Returns
    slurm.sh's result, the job's output file and each job run's (restart, exit status)."""
    env = _standins(tmp_path, {"runs": runs}, "sbatch", "srun", "scontrol")
    r = _bash("slurm.sh", "--nodes", "2", *flags, "--", *PRETRAIN_ARGS, env=env)
    output = (tmp_path / "standin" / "job-4242.out").read_text()
    jobs = [tuple(map(int, argv)) for argv in _calls(tmp_path, "job")]
    return r, output, jobs


@needs_bash
def test_slurm_resubmits_until_the_run_is_done(tmp_path):
    r, output, jobs = _slurm(tmp_path, [
        _run(stopped=("preempted", 40)),  # the time limit: SIGTERM, save, exit 0
        _run(resumed_from=40, stopped=("done", 100)),
    ], "--max-resubmits", "2")
    assert r.returncode == 0 and r.stdout == "Submitted batch job 4242\n", r.stderr
    assert jobs == [(0, 0), (1, 0)]
    assert _calls(tmp_path, "scontrol") == [["requeue", "4242"]]
    sruns = _calls(tmp_path, "srun")
    assert len(sruns) == 2 and sruns[0] == sruns[1]
    assert sruns[0][:3] == ["--kill-on-bad-exit=1", "lmscale", "pretrain"]
    assert ("slurm.sbatch: the run stopped before done (stopped: preempted at step 40); "
            "requeueing job 4242, restart 1 of 2") in output
    assert "resuming from step 40" in output and "(stopped: done, step 100)" in output


@needs_bash
def test_slurm_does_not_resubmit_a_failed_run(tmp_path):
    r, output, jobs = _slurm(tmp_path, [_run(exit=1, stderr=["Traceback (most recent call)"])],
                             "--max-resubmits", "2")
    assert jobs == [(0, 1)]
    assert _calls(tmp_path, "scontrol") == []
    assert "srun exited with status 1 and the run reported no final step" in output


@needs_bash
def test_slurm_stops_when_the_resubmits_are_used(tmp_path):
    r, output, jobs = _slurm(tmp_path, [_run(stopped=("preempted", 40)),
                                        _run(resumed_from=40, stopped=("preempted", 80))],
                             "--max-resubmits", "1")
    assert jobs == [(0, 0), (1, 3)]
    assert _calls(tmp_path, "scontrol") == [["requeue", "4242"]]
    assert "no resubmits left (--max-resubmits 1)" in output


@needs_bash
def test_slurm_without_resubmits_runs_srun_alone(tmp_path):
    r, output, jobs = _slurm(tmp_path, [_run(stopped=("preempted", 40))])
    assert jobs == [(0, 0)]  # exec'd: the run's own status, and no requeue of ours
    assert _calls(tmp_path, "scontrol") == []
    assert "--max-resubmits" not in _calls(tmp_path, "sbatch")[0]


@needs_bash
def test_shell_scripts_parse():
    for script in ("tpu_vm.sh", "slurm.sh", "slurm.sbatch"):
        r = subprocess.run(["bash", "-n", str(LAUNCH / script)], capture_output=True, text=True)
        assert r.returncode == 0, (script, r.stderr)


# --- local multi-process --------------------------------------------------------------------

def test_local_commands_give_each_process_its_id_and_fake_devices():
    base = {"XLA_FLAGS": "--xla_cpu_foo=1 --xla_force_host_platform_device_count=8", "A": "b"}
    commands = local.process_commands(3, 4, ["pretrain", "--config", "c.py"], port=12345,
                                      base_env=base)
    assert len(commands) == 3
    for i, (env, argv) in enumerate(commands):
        assert argv[1:4] == ["pretrain", "--config", "c.py"]
        assert argv[0].endswith("lmscale")
        assert argv[4:] == ["--config.distributed.coordinator_address=127.0.0.1:12345",
                            "--config.distributed.num_processes=3",
                            f"--config.distributed.process_id={i}"]
        # The parent's device count is replaced, its other XLA flags kept.
        assert env["XLA_FLAGS"] == "--xla_cpu_foo=1 --xla_force_host_platform_device_count=4"
        assert env["JAX_PLATFORMS"] == "cpu" and env["A"] == "b"
    with pytest.raises(ValueError):
        local.process_commands(0, 4, ["pretrain"])


def test_local_dry_run_prints_one_line_per_process(capsys):
    assert local.main(["--processes", "2", "--devices-per-process", "4", "--dry-run", "--",
                       "pretrain", "--config", "configs/gpt2_tiny.py", "--workdir", "runs/x"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    ports = set()
    for i, line in enumerate(lines):
        assert "XLA_FLAGS=--xla_force_host_platform_device_count=4" in line
        assert "pretrain --config configs/gpt2_tiny.py --workdir runs/x" in line
        assert "--config.distributed.num_processes=2" in line
        assert line.endswith(f"--config.distributed.process_id={i}")
        ports.add(line.split("coordinator_address=127.0.0.1:")[1].split()[0])
    assert len(ports) == 1


# Parses the flags local.py appends, joins the job and reports what JAX sees.
JAX_CHILD = textwrap.dedent("""
    import sys
    import jax
    flags = dict(a.removeprefix("--config.distributed.").split("=", 1) for a in sys.argv[1:])
    jax.distributed.initialize(flags["coordinator_address"], int(flags["num_processes"]),
                               int(flags["process_id"]))
    print("index", jax.process_index(), "of", jax.process_count(),
          "devices", jax.device_count(), "local", jax.local_device_count())
""")


def _launch(*args):
    return subprocess.Popen([sys.executable, str(LAUNCH / "local.py"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_local_runs_two_jax_processes(tmp_path):
    child = tmp_path / "child.py"
    child.write_text(JAX_CHILD)
    proc = _launch("--processes", "2", "--devices-per-process", "3", "--exec", "--",
                   sys.executable, str(child))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = sorted(line for line in out.splitlines() if " index " in line)
    assert lines == ["[p0] index 0 of 2 devices 6 local 3", "[p1] index 1 of 2 devices 6 local 3"]


def test_local_propagates_a_failure_and_stops_the_others():
    script = ("import sys, time\n"
              "if sys.argv[-1].endswith('=1'): sys.exit(3)\n"
              "time.sleep(60)\n")
    proc = _launch("--exec", "--", sys.executable, "-c", script)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert "process 1 exited with 3" in err


def test_local_forwards_sigterm_to_every_process():
    # Each child reports readiness, then exits 0 on SIGTERM as a preempted run does.
    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *_: (print('stopping'), sys.exit(0)))\n"
              "print('ready', flush=True)\n"
              "time.sleep(60)\n")
    proc = _launch("--exec", "--", sys.executable, "-c", script)
    ready = set()
    while len(ready) < 2:
        line = proc.stdout.readline()
        assert line, "a child ended before it was ready"
        if line.endswith("ready\n"):
            ready.add(line.split()[0])
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert sorted(out.split()) == ["[p0]", "[p1]", "stopping", "stopping"]
