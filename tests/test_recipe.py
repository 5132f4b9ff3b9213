"""The stage plan (recipe/stages.py) and how a stage's new heads start (recipe/inr_init.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_net

from neumeta_dist.models.registry import build_family
from neumeta_dist.recipe.inr_init import initialise_stage, reconstruction_error, reconstruction_warmup
from neumeta_dist.recipe.stages import describe, matching_layers, plan, units

pytestmark = pytest.mark.usefixtures("one_thread")


def test_authors_units_are_blocks_one_to_n_of_every_stage_input_side_first(tiny_resnet20):
    assert [u.name for u in units(tiny_resnet20, "authors")] == [
        "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1", "layer3.2"]


def test_all_units_cover_every_layer_once_in_forward_order():
    for name in ("resnet20", "resnet18", "resnet50"):
        family = build_family(name, 0.25)
        layers = [l for u in units(family, "all") for l in u.layers]
        assert sorted(l.name for l in layers) == sorted(l.name for l in family.layers)
        assert [u.name for u in units(family, "all")][0] == "stem" and units(family, "all")[-1].name == "fc"


def test_block_units_hold_the_projection_shortcut():
    family = build_family("resnet20", 0.25)
    layer2_0 = next(u for u in units(family, "blocks") if u.name == "layer2.0")
    assert [l.name.rsplit(".", 1)[1] for l in layer2_0.layers] == ["conv1", "conv2", "down"]


@pytest.mark.parametrize("per_stage, expected", [
    (1, [["layer1.1"], ["layer1.2"], ["layer2.1"], ["layer2.2"], ["layer3.1"], ["layer3.2"]]),
    (4, [["layer1.1", "layer1.2", "layer2.1", "layer2.2"], ["layer3.1", "layer3.2"]]),
])
def test_incremental_plan_adds_units_in_order_and_keeps_earlier_ones(tiny_resnet20, per_stage, expected):
    stages = plan(tiny_resnet20, "authors", incremental=True, per_stage=per_stage)
    assert [[u.name for u in s.new] for s in stages] == expected
    for k, s in enumerate(stages):
        assert [u.name for u in s.units] == sum(expected[:k + 1], [])
        assert s.index == k + 1


def test_non_incremental_plan_is_one_stage_with_every_unit(tiny_resnet20):
    (stage,) = plan(tiny_resnet20, "blocks", incremental=False)
    assert len(stage.units) == 9 and stage.new == stage.units


def test_a_set_that_selects_nothing_is_a_clear_error():
    lenet = build_family("lenet", 1.0, in_channels=1)
    with pytest.raises(ValueError, match="meta.generated=all"):
        units(lenet, "authors")
    with pytest.raises(ValueError, match="allowed"):
        units(lenet, "most")


def test_plan_description_names_every_stage_and_its_new_tensors(tiny_resnet20):
    text = describe(tiny_resnet20, plan(tiny_resnet20, "authors"), 50)
    assert "6 stage(s)" in text and "50 optimiser steps" in text
    assert "| 3 | layer2.1 | 12 (layer2.1.conv1.{weight,bias}, layer2.1.conv2.{weight,bias} new)" in text


def test_matching_layers_pair_the_same_roles():
    family = build_family("resnet20", 0.25)
    us = {u.name: u for u in units(family, "blocks")}
    pairs = [(a.name, b.name) for a, b in matching_layers(us["layer1.2"], us["layer2.0"])]
    assert pairs == [("layer1.2.conv1", "layer2.0.conv1"), ("layer1.2.conv2", "layer2.0.conv2")]


def _stage_net(family, init_stage: int):
    stages = plan(family, "authors")
    net = make_net(family, generated="authors", norm="skipinit", seed=3)
    net.activate(stages[init_stage - 1].layers)
    return net, stages[init_stage - 1]


def test_copy_init_makes_the_new_block_generate_its_predecessors_weights(tiny_resnet20):
    net, stage = _stage_net(tiny_resnet20, 2)  # adds layer1.2 after layer1.1
    new = initialise_stage(net, stage, "copy", seed=0)
    assert new == ["layer1.2.conv1.weight", "layer1.2.conv1.bias", "layer1.2.conv2.weight", "layer1.2.conv2.bias"]
    net.eval()
    # Same heads + same shapes; only the entry coordinate differs, so compare the heads directly.
    for src, dst in (("layer1.1.conv1.weight", "layer1.2.conv1.weight"), ("layer1.1.conv2.bias", "layer1.2.conv2.bias")):
        hs, hd = net.head_of(src), net.head_of(dst)
        for p in (net.inr.w_in, net.inr.b_in, net.inr.w_out, net.inr.b_out):
            assert torch.equal(p[hs], p[hd])
        assert torch.equal(net.inr.res_scale[:, hs], net.inr.res_scale[:, hd])


def test_copy_init_leaves_earlier_heads_untouched(tiny_resnet20):
    net, stage = _stage_net(tiny_resnet20, 2)
    net.eval()  # noise-free generation
    before = {n: t.clone() for n, t in net.generate(1.0).items() if n.startswith("layer1.1")}
    initialise_stage(net, stage, "copy", seed=0)
    after = net.generate(1.0)
    for n, t in before.items():
        assert torch.equal(t, after[n])


def test_random_init_gives_fresh_heads_that_differ_from_the_predecessor(tiny_resnet20):
    net, stage = _stage_net(tiny_resnet20, 2)
    initialise_stage(net, stage, "random", seed=0)
    hs, hd = net.head_of("layer1.1.conv1.weight"), net.head_of("layer1.2.conv1.weight")
    assert not torch.equal(net.inr.w_in[hs], net.inr.w_in[hd])
    # ... and deterministic: every rank draws the same heads from the same seed.
    again, _ = _stage_net(tiny_resnet20, 2)
    initialise_stage(again, stage, "random", seed=0)
    assert torch.equal(again.inr.w_in, net.inr.w_in)


def test_reconstruction_warmup_fits_only_the_new_heads_and_lowers_their_error(tiny_resnet20):
    net, stage = _stage_net(tiny_resnet20, 2)
    new = initialise_stage(net, stage, "recon", seed=0)
    old = [n for n in net.generated_names() if n not in new]
    net.eval()
    old_before = {n: t.clone() for n, t in net.generate(1.0).items() if n in old}
    err_before = reconstruction_error(net, 1.0, new)
    reconstruction_warmup(net, 150, 3e-3, [1.0, 0.5], "none", names=new)
    assert reconstruction_error(net, 1.0, new) < 0.3 * err_before
    after = net.eval().generate(1.0)
    for n, t in old_before.items():
        assert torch.equal(t, after[n]), f"{n} changed during the new heads' warm-up"


def test_each_step_samples_full_width_first_and_with_sandwich_the_narrowest_second():
    from neumeta_dist.config import load_config
    from neumeta_dist.training.loop import step_rng

    demo = Path(__file__).resolve().parents[1] / "configs" / "blockwise.yaml"
    for sandwich in (True, False):
        cfg = load_config(demo, [f"train.sandwich={str(sandwich).lower()}", "meta.min_width=0.5"])
        widths = [[step_rng(cfg, s, m, 0)[0] for m in range(4)] for s in range(50)]
        assert all(w[0] == 1.0 for w in widths)
        assert all(0.5 <= x <= 1.0 for w in widths for x in w)
        seconds = {w[1] for w in widths}
        assert (seconds == {0.5}) if sandwich else len(seconds) == 50
        assert len({w[2] for w in widths}) == 50  # the rest stay uniform
