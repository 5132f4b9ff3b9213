"""neumeta_dist.export: a generated width becomes a standalone network, saved and reloaded."""
from __future__ import annotations

import pytest
import torch

from neumeta_dist.export import PlainNet, load_exported, materialise, save_exported
from neumeta_dist.models import build_family

from conftest import make_net

pytestmark = pytest.mark.usefixtures("one_thread")


def _round_trip(net, fraction, tmp_path, x):
    net.eval()
    weights = net.generate(fraction)
    with torch.no_grad():
        expected, _ = net(x, fraction, weights=weights)
    path = tmp_path / f"net_{fraction}.pt"
    save_exported(materialise(net, weights), path, fraction)
    loaded = load_exported(path)
    assert isinstance(loaded, PlainNet)
    with torch.no_grad():
        return expected, loaded(x), loaded


@pytest.mark.parametrize("generated", ["all", "last_block"])
@pytest.mark.parametrize("fraction", [1.0, 0.5, 0.3])
def test_exported_network_reloads_to_the_same_logits(tmp_path, tiny_resnet20, generated, fraction):
    net = make_net(tiny_resnet20, generated)
    x = torch.randn(3, 1, 16, 16)
    expected, got, loaded = _round_trip(net, fraction, tmp_path, x)
    assert torch.allclose(got, expected, atol=1e-6)
    # a standalone network: every tensor of the family, at the sizes of that width
    w = loaded._w()
    sizes = net.sizes(fraction)
    assert set(w) == {f"{l.name}.{k}" for l in tiny_resnet20.layers for k in ("weight", "bias")}
    for l in tiny_resnet20.layers:
        assert tuple(w[f"{l.name}.weight"].shape) == l.weight_shape(sizes)


def test_exported_resnet18_reloads_to_the_same_logits(tmp_path):
    family = build_family("resnet18", 0.0625, in_channels=3)
    expected, got, _ = _round_trip(make_net(family, scale="all"), 0.5, tmp_path, torch.randn(2, 3, 32, 32))
    assert torch.allclose(got, expected, atol=1e-6)


def test_exported_network_keeps_trained_skipinit_scales(tmp_path, tiny_resnet20):
    net = make_net(tiny_resnet20, norm="skipinit")
    assert len(net.alpha) == len(tiny_resnet20.blocks)
    with torch.no_grad():
        for i, a in enumerate(net.alpha.values()):
            a.fill_(0.1 * (i + 1))  # as if trained: every block's α differs from 0 and 1
    x = torch.randn(3, 1, 16, 16)
    expected, got, loaded = _round_trip(net, 0.5, tmp_path, x)
    assert torch.allclose(got, expected, atol=1e-6)
    assert sorted(loaded.alphas.values()) == pytest.approx([0.1 * (i + 1) for i in range(len(net.alpha))])


def test_exported_network_of_a_partial_stage_matches_the_stage_network(tmp_path, tiny_resnet20):
    """Mid-plan, only the active blocks are generated (with their α); the rest is the teacher's."""
    net = make_net(tiny_resnet20, norm="skipinit")
    with torch.no_grad():
        for a in net.alpha.values():
            a.fill_(0.5)
    net.activate(tiny_resnet20.layers[:5])  # stem, layer1.0, layer1.1
    x = torch.randn(3, 1, 16, 16)
    expected, got, _ = _round_trip(net, 0.5, tmp_path, x)
    assert torch.allclose(got, expected, atol=1e-6)


def test_exported_network_uses_the_trained_classifier_copy(tmp_path, tiny_resnet20):
    """With `train_head`, the classifier is a trained parameter, not the teacher's."""
    from neumeta_dist.config import INRConfig
    from neumeta_dist.metamorphic import MetamorphicNet
    from neumeta_dist.recipe import generated_layers
    from conftest import random_bn_teacher

    reference = random_bn_teacher(tiny_resnet20).folded()
    net = MetamorphicNet(tiny_resnet20, reference, generated_layers(tiny_resnet20, "last_block"),
                         INRConfig(hidden=16, layers=1, num_freqs=4), scale="inner", norm="fold",
                         train_head=True)
    assert len(net.shared) == 2
    with torch.no_grad():
        for p in net.shared.values():
            p.add_(0.5)  # as if trained away from the teacher's classifier
    x = torch.randn(3, 1, 16, 16)
    expected, got, _ = _round_trip(net, 0.5, tmp_path, x)
    assert torch.allclose(got, expected, atol=1e-6)


def test_export_records_the_width_and_loads_without_the_inr(tmp_path, tiny_resnet20):
    net = make_net(tiny_resnet20).eval()
    path = tmp_path / "w.pt"
    save_exported(materialise(net, net.generate(0.5)), path, 0.5)
    art = torch.load(path, weights_only=False)
    assert art["width"] == 0.5
    loaded = load_exported(path)
    assert not any("inr" in name for name, _ in loaded.named_parameters())
    n_params = sum(p.numel() for p in loaded.parameters())
    assert n_params == net.params_at(0.5)
