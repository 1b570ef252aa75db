"""The roofline's HBM bytes for a scanned step agree with those of the same step unrolled,
compiled for a real TPU topology (libtpu gives it on this CPU; nothing runs)."""

import pytest

from lmscale.models import ModelConfig, preset
from lmscale.parallel.mesh import make_mesh
from lmscale.parallel.topology import parse_target, topology_devices
from lmscale.plan.analysis import compiled_cost
from lmscale.train.bench import synthetic_batch
from lmscale.train.objectives import objective_for
from lmscale.train.optimizer import OptimizerConfig, make_optimizer, make_schedule
from lmscale.train.step import build_sharded_step

pytest.importorskip("libtpu", reason="compiling for TPU topologies needs libtpu "
                    "(pip install -e '.[test]' installs it)")


@pytest.mark.slow  # keeps the default suite under 25 min; `pytest -m slow`
def test_scanned_and_unrolled_steps_move_the_same_bytes():
    """XLA's bytes accessed of the unrolled program (no loop to under-count) against the
    scanned program's as `compiled_cost` scales it. Before loop-aware scaling, the scanned
    figure was scaled by the FLOP ratio, which multiplied the optimiser update outside the
    loop by the layer count as well."""
    mesh = make_mesh({"data": -1, "fsdp": 1, "tensor": 1},
                     topology_devices(parse_target("v5e-4")))
    opt = OptimizerConfig(learning_rate=1e-4, warmup_steps=1, schedule="linear")
    moved, xla = {}, {}
    for scan in (False, True):
        model = ModelConfig.from_dict(preset("gpt2-tiny", num_layers=6, scan_layers=scan,
                                             dropout=0.0, compute_dtype="bfloat16"))
        batch = synthetic_batch(model, 16, 128, 0)
        step = build_sharded_step(objective_for(model), make_optimizer(opt, 10),
                                  make_schedule(opt, 10), mesh, batch, 1)
        compiled = step.lower_train().compile()
        moved[scan] = compiled_cost(compiled, 1.0).bytes_accessed
        xla[scan] = compiled.cost_analysis()
    truth = moved[False]  # no loops: XLA's own count, unscaled
    flop_scaled = xla[True]["bytes accessed"] * xla[False]["flops"] / xla[True]["flops"]
    # Measured: scanned 658 MB, FLOP-scaled 800 MB, unrolled 431 MB at this tiny width
    # (fusion bodies count a little more than XLA's own accounting inside the loop); at
    # GPT-2 small's width, 4 layers: 9.40 GB against 9.57 unrolled (FLOP-scaled 10.7).
    assert abs(moved[True] - truth) < 0.7 * abs(flop_scaled - truth)
    assert moved[True] == pytest.approx(truth, rel=0.6)
