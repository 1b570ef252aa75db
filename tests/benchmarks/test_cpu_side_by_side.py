"""benchmarks/cpu_side_by_side.py: its speed-up arithmetic on made-up timings, and one quick
run at tiny shapes of lmscale and of each peer that is installed (the Flax peer only where
its environment already exists: building it is not for the test suite)."""

import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "cpu_side_by_side.py")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import cpu_side_by_side as side  # noqa: E402


def _run(impl, dtype, seconds, shape="bert"):
    return {"impl": impl, "shape": shape, "dtype": dtype, "status": "ok",
            "step_seconds": seconds, "tokens_per_sec": 512 / seconds, "compile_seconds": 9.0,
            "step_seconds_min": 0.9 * seconds, "step_seconds_max": 1.1 * seconds,
            "others_cpu_share": 0.01, "executed_gflop_per_step": 1.0,
            "versions": {"jax": "x"}}


def test_speedups_compare_same_dtype_and_each_implementations_best_dtype():
    args = side.parse_args(["--shapes", "bert"])
    shapes = [side.shape_for("bert", args)]
    assert (shapes[0].layers, shapes[0].d_model, shapes[0].d_ff, shapes[0].vocab) == (
        12, 768, 3072, 30522)
    assert (shapes[0].seq, shapes[0].batch, shapes[0].predictions) == (128, 4, 20)
    runs = [_run("lmscale", "float32", 2.0), _run("lmscale", "bfloat16", 1.0),
            _run("hf-flax", "float32", 3.0), _run("hf-flax", "bfloat16", 4.0),
            _run("hf-torch", "float32", 5.0),
            {"impl": "hf-torch", "shape": "bert", "dtype": "bfloat16", "status": "failed",
             "error": "boom"}]
    rows = side.table_rows(shapes, ["float32", "bfloat16"], runs)
    f32, bf16 = rows
    assert f32["speedup_same_dtype"] == {"hf-flax": 1.5, "hf-torch": 2.5}
    assert bf16["speedup_same_dtype"] == {"hf-flax": 4.0}
    # Best dtypes: lmscale bf16 (1.0 s) against Flax float32 (3.0 s) and PyTorch float32.
    for row in rows:
        assert row["speedup_best_dtypes"]["hf-flax"] == {
            "speedup": 3.0, "lmscale_dtype": "bfloat16", "peer_dtype": "float32"}
        assert row["speedup_best_dtypes"]["hf-torch"]["speedup"] == 5.0
    table = side.format_table(rows, runs, list(side.IMPLS)).splitlines()
    assert len(table) == 4 and table[0].count("|") == table[2].count("|")
    assert table[2].startswith("| BERT-Base shape (4 x 128) | float32 | 2.000 (256 tok/s) |")
    assert "| 1.50x | 2.50x | 3.00x (bfloat16 vs float32) | 5.00x (bfloat16 vs float32) |" \
        in table[2]
    assert "| failed | 4.00x | - |" in table[3]


def test_seq_and_batch_overrides_rescale_the_masked_positions():
    args = side.parse_args(["--seq", "512", "--batch", "16"])
    bert, gpt = side.shape_for("bert", args), side.shape_for("gpt2", args)
    assert (bert.seq, bert.batch, bert.predictions, bert.max_len) == (512, 16, 77, 512)
    assert (gpt.vocab, gpt.predictions, gpt.max_len) == (50257, 0, 1024)


@pytest.mark.parametrize("peers_keep", [False, True])
def test_lmscale_keeps_freed_memory_and_the_peers_only_when_asked(peers_keep):
    args = side.parse_args(["--shapes", "gpt2"] + ["--peers-keep-freed-memory"] * peers_keep)
    shape = side.shape_for("gpt2", args)
    launches = {impl: side.worker_launch(sys.executable, impl, shape, "float32", args)
                for impl in side.IMPLS}
    for impl, (command, _, _) in launches.items():
        assert command[1].endswith(side.IMPLS[impl][0]) and "--interleave" in command
    # lmscale's worker sets its allocator itself, before JAX starts (as the CLI does).
    _, env, base = launches["lmscale"]
    assert base["malloc"] == "keep freed"
    assert env.get("GLIBC_TUNABLES") == os.environ.get("GLIBC_TUNABLES")
    for peer in side.PEER_IMPLS:
        _, env, base = launches[peer]
        assert base["malloc"] == ("keep freed" if peers_keep else "glibc default")
        assert (env.get("GLIBC_TUNABLES") == side.GLIBC_TUNABLES) == peers_keep


FAKE_WORKER = """
import json, sys, time
sys.path.insert(0, {peers!r})
from step_timing import time_steps
behaviour, starts = sys.argv[1], []
def step():
    if behaviour == "hang":
        time.sleep(60)
    if behaviour == "crash" and starts:  # the first timed step
        sys.exit(3)
    starts.append(time.perf_counter())
    time.sleep(0.02)
print(json.dumps(time_steps(step, steps=3, warmup=1, interleave=True) | {{"starts": starts}}))
"""


def _fake_group(monkeypatch, tmp_path, behaviours, timeout=600):
    """`run_group` on fake workers that follow the step-by-step protocol."""
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER.format(peers=side.PEERS))

    def launch(python, impl, shape, dtype, args):
        return ([python, str(script), behaviours[impl]], dict(os.environ),
                {"impl": impl, "shape": shape.key, "dtype": dtype})

    monkeypatch.setattr(side, "worker_launch", launch)
    args = side.parse_args(["--shapes", "gpt2", "--steps", "3", "--timeout", str(timeout)])
    shape = side.shape_for("gpt2", args)
    return side.run_group({impl: sys.executable for impl in behaviours}, shape, "float32",
                          args)


def test_a_group_steps_its_workers_in_turn(monkeypatch, tmp_path):
    rows = _fake_group(monkeypatch, tmp_path, {"lmscale": "ok", "hf-torch": "ok"})
    lmscale, torch = rows
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert (lmscale["stepped_with"], torch["stepped_with"]) == (["hf-torch"], ["lmscale"])
    # After each one's compile, the timed steps alternate: lmscale, torch, lmscale, ...
    timed = sorted([(t, "lmscale") for t in lmscale["starts"][1:]]
                   + [(t, "torch") for t in torch["starts"][1:]])
    assert [name for _, name in timed] == ["lmscale", "torch"] * 3
    assert len(lmscale["step_seconds_each"]) == 3 and lmscale["step_seconds"] >= 0.02
    assert len(lmscale["settle_seconds"]) == 3
    assert lmscale["executed_gflop_per_step"] > 0


def test_a_worker_that_fails_mid_run_leaves_the_others_measured(monkeypatch, tmp_path):
    lmscale, torch = _fake_group(monkeypatch, tmp_path, {"lmscale": "ok", "hf-torch": "crash"})
    assert lmscale["status"] == "ok" and len(lmscale["step_seconds_each"]) == 3
    assert torch["status"] == "failed" and torch["error"].startswith("exit 3")


def test_a_group_that_runs_out_of_time_is_killed(monkeypatch, tmp_path):
    rows = _fake_group(monkeypatch, tmp_path, {"lmscale": "hang", "hf-torch": "ok"}, timeout=1)
    assert [(r["status"], r["error"]) for r in rows] == [("failed", "timed out")] * 2


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One run of the script at tiny GPT shapes, float32, with every available peer."""
    available = {"hf-torch": side.torch_peer_python(),
                 "hf-flax": side.flax_peer_python(side.DEFAULT_PEER_VENV, create=False)}
    impls = ["lmscale"] + [i for i, (python, _) in available.items() if python]
    out = tmp_path_factory.mktemp("side")
    command = [sys.executable, SCRIPT, "--quick", "--shapes", "gpt2", "--dtypes", "float32",
               "--steps", "2", "--warmup", "1", "--no-create-venv", "--impls", ",".join(impls),
               "--out", str(out / "side.json"), "--table", str(out / "side.txt")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "side.json").read_text())
    return available, result, (out / "side.txt").read_text()


@pytest.mark.slow  # benchmark smoke runs (~30 s of setup)
def test_quick_run_measures_lmscale_and_writes_the_table(quick_run):
    _, result, text = quick_run
    [row] = result["rows"]
    assert (row["shape_key"], row["dtype"], row["batch"], row["seq"]) == ("gpt2", "float32",
                                                                          2, 32)
    seconds = row["step_seconds"]["lmscale"]
    assert 0 < seconds < 10
    assert row["tokens_per_sec"]["lmscale"] == pytest.approx(2 * 32 / seconds)
    assert 0 <= row["others_cpu_share"]["lmscale"] <= 1
    [lmscale] = [r for r in result["runs"] if r["impl"] == "lmscale"]
    assert (lmscale["layers"], lmscale["d_model"], lmscale["vocab"]) == (2, 64, 512)
    assert lmscale["compile_seconds"] > 0 and len(result["load_average_before"]) == 3
    assert "| GPT-2 small shape (2 x 32) | float32 |" in text


@pytest.mark.slow  # benchmark smoke runs (~30 s of setup)
@pytest.mark.parametrize("peer", side.PEER_IMPLS)
def test_quick_run_measures_each_installed_peer(quick_run, peer):
    available, result, text = quick_run
    python, why = available[peer]
    if python is None:
        pytest.skip(f"{peer} not installed: {why}")
    [row] = result["rows"]
    [run] = [r for r in result["runs"] if r["impl"] == peer]
    assert run["status"] == "ok", run.get("error")
    assert (run["layers"], run["d_model"], run["seq"], run["batch"]) == (2, 64, 32, 2)
    assert row["speedup_same_dtype"][peer] == pytest.approx(
        run["step_seconds"] / row["step_seconds"]["lmscale"])
    assert f"vs {side.IMPLS[peer][1]}" in text


def test_rounds_merge_into_the_median_round_and_show_their_spread():
    args = side.parse_args(["--shapes", "bert", "--dtypes", "bfloat16", "--rounds", "3"])
    shapes = [side.shape_for("bert", args)]
    rounds = [_run("lmscale", "bfloat16", s) | {"round": i} for i, s in enumerate((1.0, 3.0, 2.0))]
    rounds += [_run("hf-torch", "bfloat16", s) | {"round": i} for i, s in enumerate((2.0, 6.0))]
    rounds += [{"impl": "hf-torch", "shape": "bert", "dtype": "bfloat16", "round": 2,
                "status": "failed", "error": "boom"},
               {"impl": "hf-flax", "shape": "bert", "dtype": "bfloat16", "round": 0,
                "status": "failed", "error": "no venv"}]
    runs = side.merge_rounds(rounds)
    by_impl = {r["impl"]: r for r in runs}
    assert by_impl["lmscale"]["step_seconds"] == 2.0
    assert by_impl["lmscale"]["round_step_seconds"] == [1.0, 3.0, 2.0]
    assert by_impl["lmscale"]["tokens_per_sec"] == pytest.approx(256)
    assert (by_impl["lmscale"]["step_seconds_min"], by_impl["lmscale"]["step_seconds_max"]) \
        == pytest.approx((0.9, 3.3))
    assert "round" not in by_impl["lmscale"]
    assert by_impl["hf-torch"]["step_seconds"] == 4.0  # the failed round is left out
    assert by_impl["hf-flax"]["status"] == "failed"
    [row] = side.table_rows(shapes, ["bfloat16"], runs)
    assert row["speedup_same_dtype"] == {"hf-torch": 2.0}
    line = side.format_table([row], runs, list(side.IMPLS)).splitlines()[2]
    assert "| 2.000 (256 tok/s; 1.00-3.00) |" in line
    text = side.report(shapes, [row], runs, list(side.IMPLS),
                       {"cpu_count": 2, "lmscale_revision": "x", "load_average_before": [0],
                        "load_average_after": [0]})
    assert "over 3 rounds" in text


def test_settle_waits_for_a_quiet_window_and_no_longer_than_its_limit(monkeypatch):
    monkeypatch.setattr(side, "SETTLE_WINDOW_SECONDS", 0.001)
    cpus = os.cpu_count()
    # Busy CPU-seconds as read before the wait and after each window: five busy windows,
    # then quiet ones.
    readings = [0.0] + [i * 0.001 * cpus for i in range(1, 6)] + [5 * 0.001 * cpus] * 10
    calls = 0

    def cpu_seconds():
        nonlocal calls
        calls += 1
        return readings[calls - 1], 0.0

    monkeypatch.setattr(side, "cpu_seconds", cpu_seconds)
    side.settle()
    assert calls == 7  # the first reading, five busy windows, the first quiet one
    monkeypatch.setattr(side, "SETTLE_MAX_SECONDS", 0.05)
    monkeypatch.setattr(side, "cpu_seconds", lambda: (time.perf_counter() * cpus, 0.0))
    assert 0.05 <= side.settle() < 1.0  # never quiet: gives up at the limit


@pytest.mark.parametrize("one_at_a_time", [False, True])
def test_rounds_step_every_available_implementation_together_or_one_at_a_time(
        monkeypatch, one_at_a_time):
    groups = []

    def run_group(pythons, shape, dtype, args):
        groups.append((shape.key, dtype, sorted(pythons)))
        return [_run(impl, dtype, 1.0, shape.key) for impl in pythons]

    monkeypatch.setattr(side, "run_group", run_group)
    monkeypatch.setattr(side, "torch_peer_python", lambda: (sys.executable, ""))
    monkeypatch.setattr(side, "flax_peer_python", lambda venv, create: (None, "no venv"))
    args = side.parse_args(["--shapes", "gpt2", "--dtypes", "bfloat16", "--rounds", "2"]
                           + ["--one-at-a-time"] * one_at_a_time)
    _, runs = side.run_all(args)
    together = [("gpt2", "bfloat16", ["hf-torch", "lmscale"])]
    alone = [("gpt2", "bfloat16", ["lmscale"]), ("gpt2", "bfloat16", ["hf-torch"])]
    assert groups == (alone if one_at_a_time else together) * 2
    skipped = [r for r in runs if r["status"] == "skipped"]
    assert [(r["impl"], r["round"], r["error"]) for r in skipped] == [
        ("hf-flax", 0, "no venv"), ("hf-flax", 1, "no venv")]
