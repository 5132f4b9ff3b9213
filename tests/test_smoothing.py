import math

import pytest
import torch
from conftest import random_bn_teacher

from neumeta_dist.core.smoothing import (
    channel_features,
    path_length,
    permute,
    smooth,
    solve_path,
    total_variation,
)
from neumeta_dist.models.family import apply_layer
from neumeta_dist.models.registry import build_family


def _logits(family, weights, x):
    return family.forward(x, lambda s, h: apply_layer(s, h, weights))


@pytest.mark.parametrize("name, width, in_ch, side", [
    ("resnet20", 0.5, 1, 28),
    ("resnet18", 0.125, 3, 64),
    ("resnet50", 0.0625, 3, 64),
])
def test_permutation_preserves_logits(name, width, in_ch, side):
    family = build_family(name, width, in_channels=in_ch, num_classes=10)
    teacher = random_bn_teacher(family)
    folded = teacher.folded()
    before = {k: v.clone() for k, v in folded.items()}
    smoothed, perms, stats = smooth(family, folded, two_opt_rounds=20)

    x = torch.randn(4, in_ch, side, side)
    with torch.no_grad():
        ref = _logits(family, folded, x)
        torch.testing.assert_close(teacher(x), ref, atol=1e-4, rtol=1e-4)  # folding sanity
        torch.testing.assert_close(_logits(family, smoothed, x), ref, atol=1e-4, rtol=1e-4)

    assert all(torch.equal(before[k], folded[k]) for k in before), "input weights were mutated"
    sizes = family.full_sizes()
    assert perms and "image" not in perms and "classes" not in perms
    for g, p in perms.items():
        assert torch.equal(torch.sort(p).values, torch.arange(sizes[g])), g
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perms.values())
    assert stats["tv_after"] <= stats["tv_before"] + 1e-9


def _smooth_weights(family):
    """Weights where every channel's filter is a smooth function of its position in its group."""
    sizes, gen = family.full_sizes(), torch.Generator().manual_seed(1)
    out = {}
    for spec in family.layers:
        shape = spec.weight_shape(sizes)
        u = torch.linspace(0, 1, shape[0]).view(-1, *[1] * (len(shape) - 1))
        v = torch.linspace(0, 1, shape[1]).view(1, -1, *[1] * (len(shape) - 2))
        phase = torch.rand(shape[2:], generator=gen) * 2 * math.pi
        out[f"{spec.name}.weight"] = torch.sin(2 * u + 3 * v + phase)
        out[f"{spec.name}.bias"] = torch.cos(2 * u.flatten())
    return out


def test_smoothing_reduces_total_variation():
    family = build_family("resnet20", 0.5, in_channels=3, num_classes=10)
    clean = _smooth_weights(family)
    gen = torch.Generator().manual_seed(2)
    shuffle = {g: torch.randperm(n, generator=gen) for g, n in family.full_sizes().items()
               if g not in ("image", "classes")}
    shuffled = permute(family, clean, shuffle)

    smoothed, perms, stats = smooth(family, shuffled)
    assert stats["tv_before"] == pytest.approx(total_variation(family, shuffled))
    assert stats["tv_after"] == pytest.approx(total_variation(family, smoothed))
    assert stats["tv_after"] < 0.7 * stats["tv_before"]
    assert stats["tv_after"] <= 1.05 * total_variation(family, clean)  # the hidden order is found


def test_solve_path_finds_line_order():
    gen = torch.Generator().manual_seed(3)
    direction = torch.randn(5, generator=gen)
    t = torch.arange(40, dtype=torch.float64)
    order = torch.randperm(40, generator=gen)
    points = (t[order, None] * direction + torch.randn(5, generator=gen)).float()

    visited = order[solve_path(points, 50)]
    assert torch.equal(visited, t.long()) or torch.equal(visited, t.long().flip(0))


def test_solve_path_is_deterministic_and_beats_greedy_and_identity():
    gen = torch.Generator().manual_seed(4)
    points = torch.randn(200, 16, generator=gen)
    path = solve_path(points, 50)
    assert torch.equal(path, solve_path(points, 50))
    assert torch.equal(torch.sort(path).values, torch.arange(200))
    assert path_length(points, path) <= path_length(points, solve_path(points, 0))
    assert path_length(points, path) < path_length(points, torch.arange(200))


def test_channel_features_shape():
    family = build_family("resnet20", 0.5, in_channels=1, num_classes=10)
    weights = random_bn_teacher(family).folded()
    # stream0: produced by the stem (1·3·3 + bias), read by layer1.*.conv1 (8·3·3 each) and
    # added to by layer1.*.conv2 (8·3·3 + bias each), read by layer2.0.conv1/down (16·9, 16).
    feats = channel_features(family, weights, "stream0")
    assert feats.shape == (8, (9 + 1) + 3 * 72 + 3 * (72 + 1) + 16 * 9 + 16)


def test_importance_order_keeps_the_function_and_ranks_the_scalable_groups(tiny_resnet20):
    """smoothing.order=importance: the scalable (inner) groups most important channel first,
    the others along their path — still a pure permutation of the same network."""
    from conftest import random_bn_teacher

    from neumeta_dist.core.smoothing import importance_order
    from neumeta_dist.models.family import apply_layer
    folded = random_bn_teacher(tiny_resnet20).folded()
    ranked = tiny_resnet20.scalable_groups()
    out, perms, _ = smooth(tiny_resnet20, folded, 10, ranked)
    x = torch.randn(4, 1, 12, 12)
    run = lambda w: tiny_resnet20.forward(x, lambda s, h: apply_layer(s, h, w))
    assert torch.allclose(run(out), run(folded), atol=1e-5)
    for g in ranked:
        assert torch.equal(perms[g], importance_order(tiny_resnet20, folded, g))
        # ranked by (producer norm × consumer norm): non-increasing in the new order
        layer_in = next(l for l in tiny_resnet20.layers if l.in_group == g)
        layer_out = next(l for l in tiny_resnet20.layers if l.out_group == g)
        prod = (out[f"{layer_out.name}.weight"].flatten(1).pow(2).sum(1) + out[f"{layer_out.name}.bias"].pow(2))
        cons = out[f"{layer_in.name}.weight"].transpose(0, 1).flatten(1).pow(2).sum(1)
        score = (prod * cons).sqrt()
        assert torch.all(score[:-1] >= score[1:] - 1e-6), g
