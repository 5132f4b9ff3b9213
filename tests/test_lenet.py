"""The LeNet family (NeuMeta's Fashion-MNIST network) through the family interface."""
import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import random_bn_teacher

from neumeta_dist.config import INRConfig, load_config
from neumeta_dist.core.metamorphic import MetamorphicNet
from neumeta_dist.core.smoothing import smooth, total_variation
from neumeta_dist.evaluation.export import PlainNet, load_exported, save_exported
from neumeta_dist.models.family import Teacher, apply_layer, parameter_count
from neumeta_dist.models.lenet import LeNetFamily
from neumeta_dist.models.registry import build_family, family_from_dict
from neumeta_dist.recipe.stages import generated_layers, metamorphic_groups

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fashion_mnist_lenet.yaml"
CONVS = {"c1", "c2", "c3"}


def _family(width=1.0):
    return build_family("lenet", width, in_channels=1, num_classes=10)


def _logits(family, weights, x):
    return family.forward(x, lambda s, h: apply_layer(s, h, weights))


def test_build_family_shapes():
    family = _family()
    assert isinstance(family, LeNetFamily) and family.blocks == ()
    assert [l.name for l in family.layers] == ["conv1", "conv2", "conv3", "fc"]
    assert family.stem is family.layers[0] and family.fc == family.layers[-1]
    sizes = family.full_sizes()
    assert {l.name: l.weight_shape(sizes) for l in family.layers} == {
        "conv1": (32, 1, 5, 5), "conv2": (32, 32, 5, 5), "conv3": (32, 32, 5, 5), "fc": (10, 32)}
    half = build_family("lenet", 0.5, in_channels=1, num_classes=10)
    assert half.channels == (16, 16, 16)
    assert build_family("lenet", 0.5, channels=(8, 12, 16)).channels == (8, 12, 16)
    with pytest.raises(ValueError, match="lenet"):
        build_family("lenet5")
    assert Teacher(family).eval()(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_folded_teacher_matches_bn_teacher():
    family = _family()
    teacher = random_bn_teacher(family)
    folded = teacher.folded()
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(_logits(family, folded, x), teacher(x), atol=1e-4, rtol=1e-4)
    assert parameter_count(family, family.full_sizes()) == sum(t.numel() for t in folded.values())


def test_smoothing_preserves_logits_and_lowers_variation():
    family = _family()
    folded = random_bn_teacher(family, seed=1).folded()
    smoothed, perms, stats = smooth(family, folded, two_opt_rounds=20)
    assert set(perms) == CONVS
    assert any(not torch.equal(p, torch.arange(32)) for p in perms.values())
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(_logits(family, smoothed, x), _logits(family, folded, x), atol=1e-4, rtol=1e-4)
    assert stats["tv_after"] == pytest.approx(total_variation(family, smoothed))
    assert stats["tv_after"] <= stats["tv_before"]


def test_half_width_shrinks_only_the_conv_widths():
    family = _family()
    assert family.scalable_groups() == CONVS
    for scale in ("inner", "all"):
        assert metamorphic_groups(family, family.layers, scale) == CONVS
    assert family.sizes(0.5, family.scalable_groups()) == {"image": 1, "c1": 16, "c2": 16, "c3": 16, "classes": 10}


def test_generated_all_covers_every_layer():
    family = _family()
    assert generated_layers(family, "all") == family.layers


def _lenet_net(family, reference):
    """Every layer generated, the conv widths scaled (what the config's meta.generated=all means)."""
    return MetamorphicNet(family, reference, family.layers, INRConfig(hidden=32, layers=1, num_freqs=4),
                          scale="inner").eval()


@pytest.mark.parametrize("fraction, width", [(0.25, 8), (0.5, 16), (1.0, 32)])
def test_metamorphic_lenet_generates_everything_in_one_call(fraction, width):
    family = _family()
    net = _lenet_net(family, random_bn_teacher(family).folded())
    assert net.kernel == 5  # one 5×5 kernel (25 outputs) per coordinate, as in NeuMeta
    calls = []
    net.inr.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        logits, generated = net(torch.randn(3, 1, 28, 28), fraction)
    assert len(calls) == 1 and logits.shape == (3, 10)
    assert generated.keys() == {f"{l.name}.{k}" for l in family.layers for k in ("weight", "bias")}
    sizes = {"image": 1, "c1": width, "c2": width, "c3": width, "classes": 10}
    for l in family.layers:
        assert generated[f"{l.name}.weight"].shape == l.weight_shape(sizes)
        assert generated[f"{l.name}.bias"].shape == (sizes[l.out_group],)
    assert net.params_at(fraction) == parameter_count(family, sizes)


def test_export_round_trip_keeps_family_and_function(tmp_path):
    family = _family()
    weights = random_bn_teacher(family).folded()
    save_exported(PlainNet(family, weights, {}), tmp_path / "lenet.pt", 1.0)
    loaded = load_exported(tmp_path / "lenet.pt")
    assert loaded.family == family
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), _logits(family, weights, x))
    resnet = build_family("resnet20", 0.25)
    assert family_from_dict(dataclasses.asdict(resnet)) == resnet


def test_config_selects_lenet():
    cfg = load_config(CONFIG)
    assert (cfg.model.family, cfg.meta.generated, cfg.meta.min_width, cfg.meta.max_width) == ("lenet", "all", 0.25, 1.0)
