"""Target names, HLO accounting and the roofline: no compiler needed."""

import pytest

from lmscale.errors import ConfigError
from lmscale.parallel.chips import CHIPS
from lmscale.parallel.topology import balanced_grid, parse_target
from lmscale.plan.analysis import Cost, HloModule, _exhausted_sizes
from lmscale.plan.roofline import estimate


@pytest.mark.parametrize("name, chip, devices, topology", [
    ("v5e-16", "v5e", 16, "v5e:4x4"),
    ("v5litepod-16", "v5e", 16, "v5e:4x4"),
    ("v5e-4", "v5e", 4, "v5e:2x2"),
    ("v4-32", "v4", 16, "v4:2x2x4"),
    ("v4-8", "v4", 4, "v4:2x2x1"),
    ("v5p-64", "v5p", 32, "v5p:2x4x4"),
    ("v5p-128", "v5p", 64, "v5p:4x4x4"),
    ("v6e-64", "v6e", 64, "v6e:8x8"),
    ("v2-8", "v2", 8, "v2:2x2"),
    ("v3-8", "v3", 8, "v3:2x2"),
])
def test_accelerator_types(name, chip, devices, topology):
    target = parse_target(name)
    assert (target.chip.name, target.devices, target.topology_name) == (chip, devices, topology)


def test_slices_multiply_devices():
    assert parse_target("v5e-16", slices=2).devices == 32


@pytest.mark.parametrize("name", ["v9-8", "v5e-12", "v4-6", "tpu", "v5e-x"])
def test_unknown_or_impossible_targets_are_config_errors(name):
    with pytest.raises(ConfigError):
        parse_target(name)


def test_grids_are_balanced_powers_of_two():
    assert balanced_grid(256, 2) == (16, 16)
    assert balanced_grid(128, 3) == (4, 4, 8)


# The condition of a loop of 12, as XLA prints it.
LOOP_OF_12 = """
%cond (p: (s32[], f32[8])) -> pred[] {
  %p = (s32[]{:T(128)}, f32[8]{0}) parameter(0)
  %c = s32[]{:T(128)} constant(12)
  %i = s32[]{:T(128)} get-tuple-element(%p), index=0
  ROOT %lt = pred[]{:T(512)} compare(%i, %c), direction=LT
}
"""

# A compiled-HLO excerpt in the form XLA prints: an all-gather in a loop of 12, an async
# all-reduce outside it, a reduce-scatter whose operand is the larger buffer.
HLO = """
HloModule step
""" + LOOP_OF_12 + """
%body (p.1: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p.1 = (s32[]{:T(128)}, f32[8]{0}) parameter(0)
  %x = f32[8]{0} get-tuple-element(%p.1), index=1
  %ag = bf16[1024,768]{1,0:T(8,128)} all-gather(%x), dimensions={0}
  ROOT %t = (s32[]{:T(128)}, f32[8]{0}) tuple(%i.2, %x)
}

ENTRY %main (a: f32[8], g: f32[4096]) -> f32[8] {
  %a = f32[8]{0} parameter(0)
  %g = f32[4096]{0} parameter(1)
  %w = (s32[]{:T(128)}, f32[8]{0}) while(%init), condition=%cond, body=%body
  %ars = f32[1024]{0} all-reduce-start(%a), to_apply=%add
  %ard = f32[1024]{0} all-reduce-done(%ars)
  %rs = f32[1024]{0} reduce-scatter(%g), dimensions={0}
  ROOT %r = f32[8]{0} add(%a, %a)
}
"""

# libtpu's decomposed async all-gather (of a tied head's table): a start, a continuation in
# each iteration of a loop of 12 (overlapping the layers) and a done, each printing the
# whole collective, with the same channel; only the start moves the table.
ASYNC_HLO = """
HloModule step
""" + LOOP_OF_12 + """
%start_piece (param_0: bf16[512,192]) -> bf16[512,768] {
  %param_0 = bf16[512,192]{0,1:T(8,128)(2,1)} parameter(0)
  ROOT %all-gather.1 = bf16[512,768] all-gather(%param_0), channel_id=137, backend_config=START
}

%continuation (param_0.1: bf16[512,192]) -> bf16[512,768] {
  %param_0.1 = bf16[512,192]{0,1:T(8,128)(2,1)} parameter(0)
  ROOT %all-gather.2 = bf16[512,768] all-gather(%param_0.1), channel_id=137, backend_config=LATER
}

%body (p.1: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p.1 = (s32[]{:T(128)}, f32[8]{0}) parameter(0)
  %t0 = bf16[512,192]{0,1:T(8,128)(2,1)} constant({...})
  %piece = bf16[512,768]{0,1:T(8,128)(2,1)} fusion(%t0), kind=kOutput, calls=%continuation
  ROOT %t = (s32[]{:T(128)}, f32[8]{0}) tuple(%i.2, %x)
}

ENTRY %main (a: bf16[512,192]) -> bf16[512,768] {
  %a = bf16[512,192]{0,1:T(8,128)(2,1)} parameter(0)
  %start = bf16[512,768]{0,1:T(8,128)(2,1)} fusion(%a), kind=kCustom, calls=%start_piece
  %w = (s32[]{:T(128)}, f32[8]{0}) while(%init), condition=%cond, body=%body
  ROOT %done = bf16[512,768]{0,1:T(8,128)(2,1)} fusion(%a), kind=kCustom, calls=%continuation
}
""".replace("START", '{"async_collective_fusion_config":{"flag_start":"-1"}}'
            ).replace("LATER", '{"async_collective_fusion_config":{"flag_start":"2"}}')


def test_collectives_are_counted_as_often_as_their_loop_runs():
    totals = HloModule(HLO).collective_bytes()
    assert totals["all-gather"] == 12 * 1024 * 768 * 2
    assert totals["all-reduce"] == 1024 * 4
    assert totals["reduce-scatter"] == 4096 * 4  # the buffer before scattering
    assert totals["all-to-all"] == 0


def test_a_decomposed_async_collective_counts_once():
    assert HloModule(ASYNC_HLO).collective_bytes()["all-gather"] == 512 * 768 * 2


def test_compiler_out_of_memory_messages_give_both_sizes():
    text = ("RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm. the total memory "
            "required for HLO temporaries (58.02G) exceeds available HBM (15.75G).")
    needed, available = _exhausted_sizes(text)
    assert needed == int(58.02 * 2**30) and available == int(15.75 * 2**30)


def test_roofline_adds_collectives_to_the_slower_of_compute_and_memory():
    chip = CHIPS["v5e"]
    cost = Cost(flops=chip.peak_bf16_flops * 0.5, bytes_accessed=chip.hbm_bytes_per_sec * 0.2,
                collective_bytes={"all-reduce": chip.ici_bytes_per_sec * 0.1,
                                  "all-gather": chip.ici_bytes_per_sec * 0.1})
    e = estimate(cost, chip, "bfloat16", devices=4, model_flops=4 * cost.flops, tokens=1000)
    assert e.step_seconds == pytest.approx(0.5 + 0.2 + 0.1)
    assert e.mfu == pytest.approx(0.5 / 0.8)
    assert e.tokens_per_sec == pytest.approx(1000 / 0.8)


# A scan over 4 layers: each iteration slices one layer's weights out of the stacked
# [4, 256] array inside a fusion, and writes its [64] output into a stacked [4, 64] buffer
# in place; the entry then updates all the weights once.
SCAN_HLO = """
HloModule scan

%cond (p: (s32[], f32[4,256], f32[4,64])) -> pred[] {
  %p = (s32[], f32[4,256], f32[4,64]) parameter(0)
  %c = s32[] constant(4)
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %lt = pred[] compare(%i, %c), direction=LT
}

%fused_slice (param_0: f32[4,256], param_1: s32[]) -> f32[64] {
  %param_0 = f32[4,256]{1,0} parameter(0)
  %param_1 = s32[] parameter(1)
  %z = s32[] constant(0)
  %ds = f32[1,256]{1,0} dynamic-slice(%param_0, %param_1, %z), dynamic_slice_sizes={1,256}
  ROOT %head = f32[64]{0} slice(%ds), slice={[0:1], [0:64]}
}

%fused_update (param_0: f32[4,64], param_1: f32[64], param_2: s32[]) -> f32[4,64] {
  %param_0 = f32[4,64]{1,0} parameter(0)
  %param_1 = f32[64]{0} parameter(1)
  %param_2 = s32[] parameter(2)
  %z = s32[] constant(0)
  %row = f32[1,64]{1,0} bitcast(%param_1)
  ROOT %dus = f32[4,64]{1,0} dynamic-update-slice(%param_0, %row, %param_2, %z)
}

%body (p.1: (s32[], f32[4,256], f32[4,64])) -> (s32[], f32[4,256], f32[4,64]) {
  %p.1 = (s32[], f32[4,256], f32[4,64]) parameter(0)
  %i.1 = s32[] get-tuple-element(%p.1), index=0
  %w = f32[4,256]{1,0} get-tuple-element(%p.1), index=1
  %out = f32[4,64]{1,0} get-tuple-element(%p.1), index=2
  %layer = f32[64]{0} fusion(%w, %i.1), kind=kLoop, calls=%fused_slice
  %stacked = f32[4,64]{1,0} fusion(%out, %layer, %i.1), kind=kLoop, calls=%fused_update
  ROOT %t = (s32[], f32[4,256], f32[4,64]) tuple(%i.1, %w, %stacked)
}

ENTRY %main (w.1: f32[4,256], o: f32[4,64]) -> f32[4,256] {
  %w.1 = f32[4,256]{1,0} parameter(0)
  %o = f32[4,64]{1,0} parameter(1)
  %init = (s32[], f32[4,256], f32[4,64]) tuple(%w.1, %o)
  %loop = (s32[], f32[4,256], f32[4,64]) while(%init), condition=%cond, body=%body
  ROOT %new = f32[4,256]{1,0} add(%w.1, %w.1)
}
"""


def test_traffic_counts_loops_as_often_as_they_run_and_slices_by_what_they_touch():
    module = HloModule(SCAN_HLO)
    per_iteration = (4 + 1 * 256 * 4 + 64 * 4  # slice fusion: index, the [1,256] read, out
                     + 64 * 4 + 64 * 4 + 4)  # update fusion: reads its row, writes it
    condition = 4 + 4 + 1  # compare: two s32 in, a pred out; runs once more than the body
    entry = 3 * 4 * 256 * 4  # the weight update reads twice and writes once
    assert module.traffic_bytes() == 4 * per_iteration + 5 * condition + entry
    assert module.traffic_bytes(loops=False) == per_iteration + condition + entry
