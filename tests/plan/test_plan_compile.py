"""`lmscale plan` compiles real recipes for real TPU topologies on this CPU (libtpu gives the
topology; nothing runs). Recipes keep their width, vocabulary, heads, sequence length and
per-device batch; the default run trims layers, `-m slow` compiles every full recipe."""

import json
import os

import pytest

from lmscale.cli import main

pytest.importorskip("libtpu", reason="compiling for TPU topologies needs libtpu "
                    "(pip install -e '.[test]' installs it)")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def config(name: str) -> str:
    return os.path.join(REPO, "configs", f"{name}.py")


def plan(capsys, *args) -> tuple[int, dict | None, str]:
    code = main(["plan", *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 and "--json" in args else None), err


def assert_flops_agree(result: dict):
    ratio = result["flops_per_step_compiler"] / result["flops_per_step_analytic"]
    assert 0.9 <= ratio <= 1.1, ratio


def test_gpt2_small_fits_a_v5e_16_and_flops_agree(capsys):
    # The recipe's per-device micro-batch (512 / 8 micro-batches / 16 devices = 4
    # sequences of 1,024) at 4 of its 12 layers.
    code, result, err = plan(capsys, "--config", config("gpt2_small"), "--target", "v5e-16",
                             "--config.model.num_layers=4", "--json")
    assert code == 0, err
    assert result["fits"] is True
    assert result["devices"] == 16 and result["mesh"] == {"data": 1, "fsdp": 16, "tensor": 1}
    assert 0 < result["bytes_per_device"]["total"] <= result["hbm_bytes_per_device"]
    assert result["vocab"] == {"size": 50257, "padded": 50304}
    assert_flops_agree(result)
    assert result["collective_bytes_per_device"]["all-gather"] > 0  # FSDP gathers weights
    assert 0 < result["estimated_mfu"] < 1 and result["estimated_step_seconds"] > 0


@pytest.mark.slow  # keeps the default suite under 25 min; `pytest -m slow`
def test_gpt2_small_with_tensor_parallelism_pads_the_vocabulary_and_fits(capsys):
    code, result, err = plan(capsys, "--config", config("gpt2_small"), "--target", "v5e-16",
                             "--config.model.num_layers=2", "--config.mesh.tensor=2",
                             "--no-eval", "--json")
    assert code == 0, err
    assert result["fits"] is True and result["mesh"]["tensor"] == 2
    assert result["vocab"]["padded"] == 50432  # a multiple of 128 x 2


def test_a_tensor_size_that_does_not_divide_the_heads_names_those_that_do(capsys):
    code, _, err = plan(capsys, "--config", config("gpt2_xl"), "--target", "v5p-64",
                        "--config.mesh.tensor=4")
    assert code == 2
    assert "mesh.tensor=4" in err and "1, 5, 25" in err


def test_a_config_that_cannot_fit_exits_2_with_bytes_needed_and_levers(capsys):
    # GPT-2 XL, batch 512 x 1024 with no remat and no accumulation on 4 v5e chips (128
    # sequences per device): the compiler asks for 1.68 TB and refuses within seconds.
    code, _, err = plan(capsys, "--config", config("gpt2_xl"), "--target", "v5e-4",
                        "--config.model.remat_policy=none",
                        "--config.train.grad_accum_steps=1", "--no-eval")
    assert code == 2
    assert "does not fit" in err and "GiB per device" in err and "of HBM" in err
    assert "grad_accum_steps=2" in err and "remat_policy=full" in err
    assert "loss_chunk=256" in err


STATE_BOUND = ["--config", config("gpt2_small"), "--target", "v5e-4",
               "--config.model.num_layers=2", "--config.model.d_model=2048",
               "--config.model.num_heads=16", "--config.model.d_ff=8192",
               "--config.model.vocab_size=1024", "--config.data.seq_len=16",
               "--config.train.batch_size=8", "--config.model.remat_policy=none",
               "--no-eval", "--json"]


@pytest.mark.slow  # keeps the default suite under 25 min; `pytest -m slow`
def test_the_guard_and_accumulation_do_not_copy_the_state(capsys):
    # A model whose state dwarfs its activations (d 2,048, one row of 16 tokens per device,
    # FSDP over 4 devices). The non-finite guard selects between the old and the new state:
    # were the new one materialised beside the old, the step's temporaries would exceed
    # the state. The accumulation carry must stay sharded like the parameters: a replicated
    # float32 carry alone would add the whole unsharded gradient (4x a parameter shard).
    memory = {}
    for accum in (1, 2):
        code, result, err = plan(capsys, *STATE_BOUND, f"--config.train.grad_accum_steps={accum}")
        assert code == 0, err
        memory[accum] = result["bytes_per_device"]
    state = memory[1]["state"]
    params_shard = state / 3  # parameters and two Adam moments, equally sharded
    assert memory[1]["temporaries"] < state, memory[1]
    assert memory[2]["temporaries"] - memory[1]["temporaries"] < 4 * params_shard, memory


@pytest.mark.slow  # keeps the default suite under 25 min; `pytest -m slow`
def test_bert_base_phases_are_planned_separately(capsys):
    code, result, err = plan(capsys, "--config", config("bert_base"), "--target", "v5e-16",
                             "--config.model.num_layers=2", "--no-eval", "--json")
    assert code == 0, err
    assert [p["seq_len"] for p in result["phases"]] == [128, 512]
    for phase in result["phases"]:
        ratio = phase["flops_per_step_compiler"] / phase["flops_per_step_analytic"]
        assert 0.9 <= ratio <= 1.1, (phase["seq_len"], ratio)


# The README table's slices: each recipe's smallest v5e (and v5p) slice that fits.
@pytest.mark.slow
@pytest.mark.parametrize("recipe, target", [
    ("gpt2_small", "v5e-4"), ("gpt2_small", "v5e-16"), ("gpt2_medium", "v5e-8"),
    ("gpt2_large", "v5e-8"), ("gpt2_xl", "v5e-16"), ("gpt2_xl", "v5p-8"),
    ("gpt2_xl", "v5p-64"), ("bert_base", "v5e-4"), ("bert_large", "v5e-8"),
    ("squad_bert_base", "v5e-4")])
def test_every_full_recipe_fits_its_smallest_planned_slice(capsys, recipe, target):
    code, result, err = plan(capsys, "--config", config(recipe), "--target", target, "--json")
    assert code == 0, err
    assert result["fits"] is True
    assert_flops_agree(result)


@pytest.mark.slow
def test_the_tied_heads_all_gather_counts_once_per_micro_batch(capsys):
    """On this recipe libtpu splits the all-gather of the token table into a start, a piece
    per layer and a done; counted per piece it came to 146 tables a micro-batch."""
    code, result, err = plan(capsys, "--config", config("gpt2_small"), "--target", "v5e-4",
                             "--no-eval", "--json")
    assert code == 0, err
    table = result["vocab"]["padded"] * 768 * 2  # bf16
    gathered = result["collective_bytes_per_device"]["all-gather"]
    assert gathered <= 1.1 * table * result["grad_accum_steps"]


@pytest.mark.slow
def test_splash_saves_no_more_than_xla_attention(capsys):
    """The layers' saved q, k and v stay flat: in the splash kernel's layout a head_dim of
    64 is padded to 128 lanes (gpt2_small on v5e-4 needed 12.48 GiB, against 10.79)."""
    totals = {}
    for impl in ("splash", "xla"):
        code, result, err = plan(capsys, "--config", config("gpt2_small"), "--target",
                                 "v5e-4", "--config.model.num_layers=4",
                                 f"--config.model.attention_impl={impl}", "--no-eval", "--json")
        assert code == 0, err
        totals[impl] = result["bytes_per_device"]["total"]
    assert totals["splash"] <= 1.02 * totals["xla"], totals


# ... and the next smaller v5e slice, which the README says each refuses.
@pytest.mark.slow
@pytest.mark.parametrize("recipe, target", [
    ("gpt2_medium", "v5e-4"), ("gpt2_large", "v5e-4"), ("gpt2_xl", "v5e-8"),
    ("bert_large", "v5e-4")])
def test_the_next_smaller_slice_does_not_fit(capsys, recipe, target):
    code, _, err = plan(capsys, "--config", config(recipe), "--target", target, "--no-eval")
    assert code == 2 and "does not fit" in err


def test_two_slices_put_the_data_axis_across_them(capsys):
    code, result, err = plan(capsys, "--config", config("gpt2_tiny"), "--target", "v5e-4",
                             "--slices", "2", "--no-eval", "--json")
    assert code == 0, err
    assert result["devices"] == 8 and result["slices"] == 2 and result["fits"] is True


@pytest.mark.slow  # keeps the default suite under 25 min; `pytest -m slow`
def test_search_ranks_what_fits_fastest_first(capsys):
    code = main(["plan", "--config", config("gpt2_tiny"), "--target", "v5e-4", "--search",
                 "--max-tensor", "1", "--remat", "none"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = [line.split() for line in out.splitlines() if "--config.mesh" in line]
    assert {tuple(r[1:4]) for r in rows} == {("1", "4", "1"), ("4", "1", "1")}
    steps = [float(r[7].removesuffix("ms")) for r in rows]
    assert steps == sorted(steps)
    assert all("--config.mesh.fsdp=" in " ".join(r) for r in rows)
