"""The ways generated blocks replace batch norm: SkipInit's α, plain fold, per-width recalibration."""
from __future__ import annotations

import pytest
import torch
from conftest import make_net

from neumeta_dist.models.family import apply_layer
from neumeta_dist.recipe.inr_init import subsample_index
from neumeta_dist.recipe.recalib import channel_stats, layer_stats, recalibrate

pytestmark = pytest.mark.usefixtures("one_thread")


def test_alpha_zero_makes_a_generated_block_the_identity(tiny_resnet20):
    net = make_net(tiny_resnet20, generated="authors", norm="skipinit").eval()
    assert all(a.item() == 0.0 for a in net.alphas().values()) and len(net.alphas()) == 6
    x = torch.randn(3, 1, 16, 16)
    logits, generated = net(x, 0.5)
    # The same network with every generated block removed (its branch contributes nothing).
    full = net.weights(generated)
    gen_blocks = set(net.alphas())

    def walk(spec, h):
        return apply_layer(spec, h, full)

    expected = tiny_resnet20.forward(x, walk, lambda b: 0.0 if b.name in gen_blocks else 1.0)
    torch.testing.assert_close(logits, expected)
    # ... and α = 0 is not a no-op: with α = 1 the block's branch changes the logits.
    with torch.no_grad():
        for a in net.alpha.values():
            a.fill_(1.0)
    assert not torch.allclose(net(x, 0.5)[0], logits)


def test_fold_norm_has_no_residual_scales(tiny_resnet20):
    net = make_net(tiny_resnet20, generated="authors", norm="fold")
    assert len(net.alpha) == 0 and net.alphas() == {}


def test_recalibrated_outputs_have_the_full_width_channel_statistics(tiny_resnet20):
    """Each generated conv's output, in the recalibrated width-0.5 network, has per-channel mean
    and std equal to the full-width network's channel at the same relative position — both
    computed directly here from plain forwards."""
    net = make_net(tiny_resnet20, generated="authors", norm="fold").eval()
    x = torch.randn(64, 1, 16, 16)
    weights = recalibrate(net, 0.5, net.generate(0.5), x)

    full_width, student = {}, {}
    ref = net.weights(net.generate(1.0))
    tiny_resnet20.forward(x, lambda s, h: _record(full_width, s, apply_layer(s, h, ref)))
    rec = net.weights(weights)
    tiny_resnet20.forward(x, lambda s, h: _record(student, s, apply_layer(s, h, rec)))

    for layer in net.generated:
        mean, std = student[layer.name]
        idx = subsample_index(len(mean), len(full_width[layer.name][0]))
        assert len(mean) < len(full_width[layer.name][0]) or layer.out_group not in net.groups
        torch.testing.assert_close(mean, full_width[layer.name][0][idx], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(std, full_width[layer.name][1][idx], atol=1e-4, rtol=1e-3)
    # ... while without recalibration they do not.
    plain = {}
    raw = net.weights(net.generate(0.5))
    tiny_resnet20.forward(x, lambda s, h: _record(plain, s, apply_layer(s, h, raw)))
    last = net.generated[-1].name
    idx = subsample_index(len(plain[last][0]), len(full_width[last][0]))
    assert not torch.allclose(plain[last][1], full_width[last][1][idx], atol=1e-3)


def test_recalibration_at_full_width_changes_nothing(tiny_resnet20):
    net = make_net(tiny_resnet20, generated="authors", norm="fold").eval()
    x = torch.randn(32, 1, 16, 16)
    generated = net.generate(1.0)
    out = recalibrate(net, 1.0, generated, x)
    for n in generated:
        torch.testing.assert_close(out[n], generated[n], atol=1e-4, rtol=1e-4)


def test_recalib_all_also_renormalises_the_fixed_convs(tiny_resnet20):
    """meta.norm=recalib_all: every conv of the width-0.5 network, fixed ones included, has the
    full-width channel statistics (nested coordinates: the same channel); plain `recalib`
    leaves the fixed convs drifted. At full width both are the identity."""
    net = make_net(tiny_resnet20, generated="authors", norm="recalib_all", nested=True).eval()
    x = torch.randn(64, 1, 16, 16)
    generated = net.generate(0.5)
    out = recalibrate(net, 0.5, generated, x)
    fixed = [s.name for s in tiny_resnet20.layers
             if not s.is_linear and s.name not in {l.name for l in net.generated}]
    assert fixed and all(f"{n}.weight" in out for n in fixed)

    full_width, student = {}, {}
    ref = net.weights(net.generate(1.0))
    tiny_resnet20.forward(x, lambda s, h: _record(full_width, s, apply_layer(s, h, ref)))
    rec = net.weights(out)
    tiny_resnet20.forward(x, lambda s, h: _record(student, s, apply_layer(s, h, rec)))
    for name in fixed + [l.name for l in net.generated]:
        mean, std = student[name]
        torch.testing.assert_close(mean, full_width[name][0][:len(mean)], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(std, full_width[name][1][:len(mean)], atol=1e-4, rtol=1e-3)

    net_gen_only = make_net(tiny_resnet20, generated="authors", norm="recalib", nested=True).eval()
    net_gen_only.load_state_dict(net.state_dict())
    only = recalibrate(net_gen_only, 0.5, generated, x)
    assert not any(f"{n}.weight" in only for n in fixed)
    drifted = {}
    tiny_resnet20.forward(x, lambda s, h: _record(drifted, s, apply_layer(s, h, net_gen_only.weights(only))))
    last_fixed = fixed[-1]
    assert not torch.allclose(drifted[last_fixed][1], full_width[last_fixed][1], atol=1e-3)

    same = recalibrate(net, 1.0, net.generate(1.0), x)
    for n in same:
        torch.testing.assert_close(same[n], ref[n], atol=1e-4, rtol=1e-4)


def test_layer_stats_are_channel_stats_of_the_forward(tiny_resnet20):
    net = make_net(tiny_resnet20, generated="authors", norm="fold")
    x = torch.randn(8, 1, 16, 16)
    weights = {n: net.reference(n) for n in net.reference_names()}
    stats = layer_stats(net, weights, x)
    y = apply_layer(tiny_resnet20.stem, x, weights)
    torch.testing.assert_close(stats["stem"][0], channel_stats(y)[0])


def _record(store, spec, y):
    store[spec.name] = channel_stats(y)
    return y


def _gn_family():
    from neumeta_dist.models.registry import build_family
    return build_family("resnet20", 0.25, in_channels=1, num_classes=10, norm="group")


def _gn_teacher(family):
    from neumeta_dist.models.family import Teacher
    torch.manual_seed(0)
    teacher = Teacher(family)
    with torch.no_grad():
        for gn in teacher.norms.values():
            assert isinstance(gn, torch.nn.GroupNorm)
            gn.weight.uniform_(0.5, 1.5)
            gn.bias.normal_(0, 0.3)
    return teacher


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_groupnorm_student_computes_the_groupnorm_teacher_in_both_modes(mode):
    """GN has no running statistics: the student's functional GN equals the teacher's module."""
    family = _gn_family()
    teacher = _gn_teacher(family).train(mode == "train")
    weights = teacher.folded()
    assert {"stem.scale", "layer1.0.conv1.scale"} <= set(weights) and "fc.scale" not in weights
    x = torch.randn(4, 1, 16, 16)
    expected = teacher(x)
    got = family.forward(x, lambda s, h: apply_layer(s, h, weights))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_groupnorm_smoothing_keeps_the_function():
    from neumeta_dist.core.smoothing import smooth
    family = _gn_family()
    weights = _gn_teacher(family).eval().folded()
    smoothed, perms, stats = smooth(family, weights, 10)
    x = torch.randn(4, 1, 16, 16)
    before = family.forward(x, lambda s, h: apply_layer(s, h, weights))
    after = family.forward(x, lambda s, h: apply_layer(s, h, smoothed))
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    assert stats["tv_after"] <= stats["tv_before"] and any(not torch.equal(p, torch.arange(len(p))) for p in perms.values())


def test_groupnorm_student_generates_each_layers_scale_in_the_same_call():
    from neumeta_dist.config import INRConfig
    from neumeta_dist.core.metamorphic import MetamorphicNet
    from neumeta_dist.models.family import parameter_count
    from neumeta_dist.recipe.stages import generated_layers
    family = _gn_family()
    reference = _gn_teacher(family).eval().folded()
    net = MetamorphicNet(family, reference, generated_layers(family, "authors"), INRConfig(hidden=16, layers=1),
                         norm="groupnorm").eval()
    calls = []
    net.inr.register_forward_hook(lambda *a: calls.append(1))
    generated = net.generate(0.5)
    assert len(calls) == 1
    assert generated["layer1.1.conv1.scale"].shape == (2,)  # inner width 4 → 2 channels
    logits, _ = net(torch.randn(2, 1, 16, 16), 0.5)
    assert logits.shape == (2, 10)
    full = {n: t for n, t in reference.items()}
    assert parameter_count(family, family.full_sizes()) == sum(t.numel() for t in full.values())
