"""Which rows of a global batch each process loads: those its devices hold under the batch
sharding, so that processes that are replicas of the same rows load the same rows.

On 8 fake devices of one process, a process is simulated as a set of the mesh's devices;
one test runs 2 real processes x 4 devices and assembles global batches from their rows."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from lmscale.data.loader import ArrayExamples, StepBatches
from lmscale.parallel.mesh import (
    MESH_AXES, batch_rows_held, describe_rows, make_mesh, process_batch_rows,
)
from lmscale.train.step import ShardedStep

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rows_per_process(mesh: Mesh, processes: int, batch_size: int = 16) -> list[str]:
    """Each simulated process owns a contiguous run of the mesh's devices, in mesh order
    (how `jax.make_mesh` lays out hosts' devices)."""
    devices = list(mesh.devices.flat)
    per = len(devices) // processes
    return [describe_rows(batch_rows_held(mesh, batch_size, devices[p * per:(p + 1) * per]))
            for p in range(processes)]


@pytest.mark.parametrize("sizes, processes, expected", [
    ({"data": 2, "fsdp": 2, "tensor": 2}, 2, ["0:8", "8:16"]),
    ({"fsdp": 8}, 2, ["0:8", "8:16"]),
    # The tensor axis spans both hosts: each holds every row, and must load all of them.
    ({"tensor": 8}, 2, ["0:16", "0:16"]),
    ({"data": 2, "tensor": 4}, 2, ["0:8", "8:16"]),
    # Two data shards over four processes: processes 0 and 1 are replicas, as are 2 and 3.
    ({"data": 2, "tensor": 4}, 4, ["0:8", "0:8", "8:16", "8:16"]),
    ({"data": 4, "tensor": 2}, 4, ["0:4", "4:8", "8:12", "12:16"]),
])
def test_each_process_loads_the_rows_its_devices_hold(sizes, processes, expected):
    assert rows_per_process(make_mesh(sizes), processes) == expected


def test_a_process_whose_devices_are_interleaved_loads_separate_row_blocks():
    devices = jax.devices()
    order = [devices[i] for pair in zip(range(4), range(4, 8)) for i in pair]  # 0 4 1 5 ...
    mesh = Mesh(np.array(order).reshape(1, 8, 1), MESH_AXES)
    first = batch_rows_held(mesh, 16, devices[:4])
    assert describe_rows(first) == "0:2, 4:6, 8:10, 12:14"


def test_one_process_loads_every_row_and_the_batch_is_unchanged():
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    rows = process_batch_rows(mesh, 16)
    assert rows.tolist() == list(range(16))
    step = ShardedStep(mesh, None, None, {"x": jax.ShapeDtypeStruct((16, 3), np.int32)},
                       None, None, None)
    batch = StepBatches(ArrayExamples({"x": np.arange(60).reshape(20, 3)}), 16, 0, rows)[1]
    assert (np.asarray(step.global_batch(batch)["x"]) == batch["x"]).all()


# Each process loads its rows of steps 0 and 3 (the second wraps past the 40 examples)
# on several meshes; the global arrays assembled from them, gathered back, must equal the
# whole batch that one process would load, and so must the first-pass weights.
TWO_PROCESS_CHILD = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    flags = dict(a.removeprefix("--config.distributed.").split("=", 1) for a in sys.argv[1:])
    jax.distributed.initialize(flags["coordinator_address"], int(flags["num_processes"]),
                               int(flags["process_id"]))
    from jax.sharding import Mesh
    from lmscale.data.loader import ArrayExamples, StepBatches
    from lmscale.parallel.mesh import (
        MESH_AXES, describe_rows, fetch_to_hosts, make_mesh, process_batch_rows)
    from lmscale.train.step import ShardedStep

    first, second = ([d for d in jax.devices() if d.process_index == p] for p in (0, 1))
    interleaved = [d for pair in zip(first, second) for d in pair]
    meshes = {"fsdp=8": make_mesh({"fsdp": 8}), "tensor=8": make_mesh({"tensor": 8}),
              "data=2,tensor=4": make_mesh({"data": 2, "tensor": 4}),
              "interleaved": Mesh(np.array(interleaved).reshape(1, 8, 1), MESH_AXES)}
    examples = ArrayExamples({"x": np.arange(120).reshape(40, 3)})
    whole = StepBatches(examples, 16, seed=0)
    for name, mesh in meshes.items():
        rows = process_batch_rows(mesh, 16)
        mine = StepBatches(examples, 16, seed=0, rows=rows)
        step = ShardedStep(mesh, None, None, {"x": jax.ShapeDtypeStruct((16, 3), np.int32)},
                           None, None, None)
        for s in (0, 3):
            local = mine[s] | {"w": mine.first_pass_weights(s)}
            expected = whole[s] | {"w": whole.first_pass_weights(s)}
            got = fetch_to_hosts(step.global_batch(local))
            for k in expected:
                assert (got[k] == expected[k]).all(), (name, s, k, got[k], expected[k])
        print("rows", name, describe_rows(rows))
""")


def test_two_processes_assemble_global_batches_from_the_rows_they_load(tmp_path):
    child = tmp_path / "child.py"
    child.write_text(TWO_PROCESS_CHILD)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "launch", "local.py"), "--processes", "2",
         "--devices-per-process", "4", "--exec", "--", sys.executable, str(child)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    reported = sorted(line for line in proc.stdout.splitlines() if "] rows " in line)
    assert reported == [
        "[p0] rows data=2,tensor=4 0:8", "[p0] rows fsdp=8 0:8",
        "[p0] rows interleaved 0:2, 4:6, 8:10, 12:14", "[p0] rows tensor=8 0:16",
        "[p1] rows data=2,tensor=4 8:16", "[p1] rows fsdp=8 8:16",
        "[p1] rows interleaved 2:4, 6:8, 10:12, 14:16", "[p1] rows tensor=8 0:16",
    ]
