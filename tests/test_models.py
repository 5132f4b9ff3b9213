"""neumeta_dist.models: the width-parametric families, BN folding, parameter counts."""
from __future__ import annotations

import pytest
import torch
from conftest import random_bn_teacher

from neumeta_dist.models.family import Teacher, apply_layer, parameter_count
from neumeta_dist.models.registry import build_family
from neumeta_dist.models.resnet import FAMILIES

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = [  # (family, width, input channels, image side)
    ("resnet20", 0.25, 1, 16),
    ("resnet18", 0.0625, 3, 32),
    ("resnet50", 0.03125, 3, 32),
]


def _folded_logits(family, weights, x):
    return family.forward(x, lambda s, h: apply_layer(s, h, weights))


@pytest.mark.parametrize("name, width, in_ch, side", CASES)
def test_folded_weights_give_the_bn_teachers_logits(name, width, in_ch, side):
    family = build_family(name, width, in_channels=in_ch, num_classes=10)
    teacher = random_bn_teacher(family)
    x = torch.randn(3, in_ch, side, side)
    with torch.no_grad():
        expected = teacher(x)
        got = _folded_logits(family, teacher.folded(), x)
    assert got.shape == (3, 10)
    assert expected.abs().max() > 1e-3  # a non-trivial function, not all zeros
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)


def test_folding_is_exact_only_in_eval_mode(tiny_resnet20):
    """Folding uses running statistics: a train-mode teacher (batch statistics) differs."""
    teacher = random_bn_teacher(tiny_resnet20)
    x = torch.randn(4, 1, 16, 16)
    folded = teacher.folded()
    with torch.no_grad():
        train_mode = teacher.train()(x)
    assert not torch.allclose(train_mode, _folded_logits(tiny_resnet20, folded, x), atol=1e-3)


@pytest.mark.parametrize("name, width, in_ch, side", CASES)
def test_parameter_count_at_full_width_is_the_folded_networks_size(name, width, in_ch, side):
    family = build_family(name, width, in_channels=in_ch)
    folded = Teacher(family).eval().folded()
    assert parameter_count(family, family.full_sizes()) == sum(t.numel() for t in folded.values())


def test_folded_dict_has_a_weight_and_bias_of_the_right_shape_for_every_layer(tiny_resnet20):
    sizes = tiny_resnet20.full_sizes()
    folded = Teacher(tiny_resnet20).eval().folded()
    assert set(folded) == {f"{l.name}.{k}" for l in tiny_resnet20.layers for k in ("weight", "bias")}
    for l in tiny_resnet20.layers:
        assert folded[f"{l.name}.weight"].shape == l.weight_shape(sizes)
        assert folded[f"{l.name}.bias"].shape == (sizes[l.out_group],)


def test_parameter_count_shrinks_with_the_width_of_scaled_groups(tiny_resnet20):
    groups = tiny_resnet20.scalable_groups()
    counts = [parameter_count(tiny_resnet20, tiny_resnet20.sizes(f, groups)) for f in (1.0, 0.75, 0.5, 0.25)]
    assert counts == sorted(counts, reverse=True) and len(set(counts)) == 4


def test_full_resnet20_has_the_published_size():
    """ResNet-20 (CIFAR, 16/32/64) has ~0.27 M parameters; folded BN adds one bias per conv channel."""
    family = build_family("resnet20")
    assert family.channels == (16, 32, 64)
    assert len([l for l in family.layers if not l.is_linear and l.k == 3]) == 19  # stem + 18 block convs
    count = parameter_count(family, family.full_sizes())
    assert 0.26e6 < count < 0.28e6


@pytest.mark.parametrize("name", list(FAMILIES))
def test_width_multiplier_scales_every_stage(name):
    full = build_family(name).channels
    half = build_family(name, 0.5).channels
    assert full == FAMILIES[name]["channels"]
    assert half == tuple(round(c / 2) for c in full)


def test_width_multiplier_keeps_at_least_one_channel():
    assert min(build_family("resnet20", 0.001).channels) >= 1


def test_explicit_channels_override_the_width():
    family = build_family("resnet20", 0.5, channels=(3, 5, 7))
    assert family.channels == (3, 5, 7)
    sizes = family.full_sizes()
    assert sizes["stream0"] == 3 and sizes["layer2.0.mid"] == 5 and sizes["layer3.2.mid"] == 7
    assert Teacher(family)(torch.randn(1, 3, 8, 8)).shape == (1, 10)


def test_in_channels_and_num_classes_reach_stem_and_classifier():
    family = build_family("resnet20", 0.25, in_channels=1, num_classes=7)
    shapes = {k: v.shape for k, v in Teacher(family).eval().folded().items()}
    assert shapes["stem.weight"][1] == 1
    assert shapes["fc.weight"][0] == 7 and shapes["fc.bias"] == (7,)


def test_unknown_family_is_a_value_error_listing_the_known_ones():
    with pytest.raises(ValueError) as err:
        build_family("resnet7")
    msg = str(err.value)
    assert "resnet7" in msg
    for known in FAMILIES:
        assert known in msg


def test_wrong_number_of_explicit_channels_is_a_value_error_saying_how_many(tiny_resnet20):
    with pytest.raises(ValueError, match=r"3 entries.*resnet20.*got 2"):
        build_family("resnet20", channels=(8, 16))
    with pytest.raises(ValueError, match=r"4 entries.*resnet18.*got 3"):
        build_family("resnet18", channels=(8, 16, 32))


def test_sizes_shrink_only_the_given_groups(tiny_resnet20):
    full = tiny_resnet20.full_sizes()
    groups = {"layer1.0.mid", "layer3.2.mid"}
    sizes = tiny_resnet20.sizes(0.5, groups)
    assert set(sizes) == set(full)
    for g, n in full.items():
        assert sizes[g] == (max(1, round(0.5 * n)) if g in groups else n), g
    assert sizes["layer1.0.mid"] < full["layer1.0.mid"]


def test_sizes_never_reach_zero_channels(tiny_resnet20):
    sizes = tiny_resnet20.sizes(0.01, set(tiny_resnet20.full_sizes()))
    assert min(sizes.values()) == 1


def test_scalable_groups_are_the_block_hidden_widths(tiny_resnet20):
    groups = tiny_resnet20.scalable_groups()
    assert groups == {f"{b.name}.mid" for b in tiny_resnet20.blocks}
    r50 = build_family("resnet50", 0.03125)
    assert r50.scalable_groups() == {f"{b.name}.{m}" for b in r50.blocks for m in ("mid1", "mid2")}


def test_network_with_scaled_hidden_widths_runs_and_keeps_its_output_shape(tiny_resnet20):
    """Any width of the hidden groups gives a consistent network (shapes chain through)."""
    teacher = random_bn_teacher(tiny_resnet20)
    folded = teacher.folded()
    sizes = tiny_resnet20.sizes(0.5, tiny_resnet20.scalable_groups())
    small = {}
    for l in tiny_resnet20.layers:  # the first channels of every tensor
        o, i = sizes[l.out_group], sizes[l.in_group]
        small[f"{l.name}.weight"] = folded[f"{l.name}.weight"][:o, :i]
        small[f"{l.name}.bias"] = folded[f"{l.name}.bias"][:o]
    assert _folded_logits(tiny_resnet20, small, torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_resnet_topology_strides_and_projections():
    r20 = build_family("resnet20", 0.25)
    assert [b.name for b in r20.blocks] == [f"layer{s}.{j}" for s in (1, 2, 3) for j in range(3)]
    assert [b.name for b in r20.blocks if b.shortcut] == ["layer2.0", "layer3.0"]
    assert all(b.convs[0].stride == 2 for b in r20.blocks if b.shortcut)
    r50 = build_family("resnet50", 0.03125)
    # bottlenecks: stride on the 3×3 conv, and the first block projects 4→16 channels
    assert r50.blocks[0].shortcut is not None
    assert [c.k for c in r50.blocks[0].convs] == [1, 3, 1]
    assert r50.blocks[3].name == "layer2.0"
    assert r50.blocks[3].convs[1].stride == 2 and r50.blocks[3].convs[0].stride == 1
    assert r50.full_sizes()[r50.fc.in_group] == 4 * r50.channels[-1]
