"""Launchers: the TPU VM and SLURM scripts' --dry-run output (they cannot run here), and
launch/local.py building and really running a multi-process job on 127.0.0.1."""

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"
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
    bad = _bash("tpu_vm.sh", "--dry-run", "--bogus", "x", "--", *PRETRAIN_ARGS)
    assert bad.returncode == 2 and "--bogus" in bad.stderr and bad.stdout == ""


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
