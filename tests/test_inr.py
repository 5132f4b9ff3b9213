"""neumeta_dist.core.inr + neumeta_dist.core.metamorphic: one INR call generates the whole network."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import make_net, random_bn_teacher

from neumeta_dist.core.inr import INR, SegmentPlan, fourier_features, grouped_segment_mm
from neumeta_dist.models.registry import build_family
from neumeta_dist.recipe.stages import generated_layers, metamorphic_groups

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = {
    "resnet20": dict(name="resnet20", width=0.25, in_channels=1),  # stages 4/8/16, 1×16×16 input
    "resnet18": dict(name="resnet18", width=0.0625, in_channels=3),  # stages 4/8/16/32
}
SIDE = {"resnet20": 16, "resnet18": 32}


def _family(key):
    return build_family(**FAMILIES[key])


class _CallCounter:
    def __init__(self, module):
        self.calls = 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, *_):
        self.calls += 1


def _expected_shapes(family, generated, scale, fraction):
    """Independent of the net: every generated layer's weight and bias at `fraction`."""
    layers = generated_layers(family, generated)
    sizes = family.sizes(fraction, metamorphic_groups(family, layers, scale))
    out = {}
    for l in layers:
        out[f"{l.name}.weight"] = l.weight_shape(sizes)
        out[f"{l.name}.bias"] = (sizes[l.out_group],)
    return out


@pytest.mark.parametrize("key", list(FAMILIES))
@pytest.mark.parametrize("scale", ["inner", "all"])
def test_one_inr_call_generates_every_tensor_with_its_shape_at_every_width(key, scale):
    family = _family(key)
    net = make_net(family, "all", scale).eval()
    counter = _CallCounter(net.inr)
    totals = {}
    for fraction in (1.0, 0.5, 0.3):
        before = counter.calls
        weights = net.generate(fraction)
        assert counter.calls - before == 1
        expected = _expected_shapes(family, "all", scale, fraction)
        assert set(weights) == set(expected)
        assert {n: tuple(w.shape) for n, w in weights.items()} == expected
        assert all(torch.isfinite(w).all() for w in weights.values())
        totals[fraction] = sum(w.numel() for w in weights.values())
    # the widths really differ, and full width has the teacher's shapes
    assert totals[1.0] > totals[0.5] > totals[0.3]
    for name, w in net.generate(1.0).items():
        assert w.shape == net.reference(name).shape


@pytest.mark.parametrize("key", list(FAMILIES))
def test_forward_runs_the_width_network_from_one_inr_call(key):
    family = _family(key)
    net = make_net(family).eval()
    counter = _CallCounter(net.inr)
    x = torch.randn(2, family.in_channels, SIDE[key], SIDE[key])
    for i, fraction in enumerate((1.0, 0.5, 0.3), start=1):
        logits, generated = net(x, fraction)
        assert counter.calls == i
        assert logits.shape == (2, family.num_classes)
        assert set(generated) == set(_expected_shapes(family, "all", "inner", fraction))
    # passing pre-generated weights runs the network without calling the INR
    weights = net.generate(0.5)
    calls = counter.calls
    logits, _ = net(x, 0.5, weights=weights)
    assert counter.calls == calls
    assert torch.allclose(logits, net(x, 0.5)[0], atol=1e-6)


def test_shared_head_mode_has_one_head_and_still_generates_everything(tiny_resnet20):
    net = make_net(tiny_resnet20, heads="shared").eval()
    assert net.inr.num_heads == 1
    weights = net.generate(0.5)
    assert {n: tuple(w.shape) for n, w in weights.items()} == _expected_shapes(tiny_resnet20, "all", "inner", 0.5)


def test_last_block_generates_only_the_last_block_and_keeps_the_teacher_elsewhere(tiny_resnet20):
    family = tiny_resnet20
    net = make_net(family, "last_block").eval()
    last = family.blocks[-1]
    names = {f"{l.name}.{k}" for l in last.convs + ((last.shortcut,) if last.shortcut else ())
             for k in ("weight", "bias")}
    weights = net.generate(0.5)
    assert set(weights) == names
    # the hidden width of the last block shrinks; nothing else may
    hidden = family.inner_groups(last)[0]
    assert net.sizes(0.5)[hidden] == round(0.5 * family.full_sizes()[hidden])
    assert all(net.sizes(0.5)[g] == n for g, n in family.full_sizes().items() if g != hidden)
    logits, _ = net(torch.randn(2, 1, 16, 16), 0.5)
    assert logits.shape == (2, 10)


def test_storage_counts_the_inr_and_exactly_the_teacher_tensors_it_does_not_generate(tiny_resnet20):
    everything = sum(t.numel() for t in random_bn_teacher(tiny_resnet20).folded().values())
    for generated in ("all", "last_block"):
        net = make_net(tiny_resnet20, generated)
        made = sum(net.reference(n).numel() for n in net.generated_names())
        got = net.storage()
        assert got["inr"] == sum(p.numel() for p in net.inr.parameters()) > 0
        assert got["fixed"] == everything - made and got["total"] == got["inr"] + got["fixed"] + got["alphas"]
    assert make_net(tiny_resnet20, "all").storage()["fixed"] == 0


def test_loss_on_generated_weights_reaches_every_used_head_and_only_those(tiny_resnet20):
    net = make_net(tiny_resnet20).train()
    weights = net.generate(0.5, generator=torch.Generator().manual_seed(0))
    loss = sum(w.pow(2).sum() for w in weights.values())
    loss.backward()
    used = {net.head_of(n) for n in weights}
    assert used == set(range(net.inr.num_heads))
    for h in used:
        for p in (net.inr.w_in, net.inr.b_in, net.inr.w_out, net.inr.b_out, *net.inr.w_hid):
            assert p.grad[h].abs().sum() > 0, f"head {h} got no gradient"


def test_inactive_heads_get_no_gradient(tiny_resnet20):
    family = tiny_resnet20
    net = make_net(family).train()
    active = family.layers[:4]
    net.activate(active)
    weights = net.generate(1.0)
    assert set(weights) == {f"{l.name}.{k}" for l in active for k in ("weight", "bias")}
    sum(w.pow(2).sum() for w in weights.values()).backward()
    used = {net.head_of(n) for n in weights}
    for h in range(net.inr.num_heads):
        got = net.inr.w_out.grad[h].abs().sum() > 0
        assert bool(got) == (h in used)


def test_task_loss_reaches_the_head_of_every_generated_tensor_it_depends_on(tiny_resnet20):
    # An untrained INR can emit a network whose ReLUs are all dead (then dL/dW = 0 for most
    # tensors); this seed's random network is alive, so the check below covers most heads.
    net = make_net(tiny_resnet20, seed=1).train()
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])
    logits, weights = net(x, 0.5, generator=torch.Generator().manual_seed(0))
    loss = F.cross_entropy(logits, y)
    names = list(weights)
    # every generated tensor is in the loss's graph (allow_unused=False raises otherwise) ...
    grads = torch.autograd.grad(loss, [weights[n] for n in names], retain_graph=True)
    loss.backward()
    live = [n for n, g in zip(names, grads) if g.abs().sum() > 0]
    assert "fc.bias" in live and len(live) > 1
    # ... and wherever the loss depends on one, ordinary autograd carries it into its head
    for n in live:
        assert net.inr.w_out.grad[net.head_of(n)].abs().sum() > 0, f"{n}: no gradient in its head"


def test_generation_is_noise_free_in_eval_mode_and_seeded_in_training_mode(tiny_resnet20):
    net = make_net(tiny_resnet20)
    net.eval()
    a, b = net.generate(0.5), net.generate(0.5)
    assert all(torch.equal(a[n], b[n]) for n in a)
    net.train()
    noisy1 = net.generate(0.5, noise=1.0, generator=torch.Generator().manual_seed(1))
    noisy2 = net.generate(0.5, noise=1.0, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(noisy1[n], noisy2[n]) for n in a)
    assert any(not torch.equal(noisy1[n], a[n]) for n in a)
    assert all(torch.equal(net.generate(0.5, noise=0.0)[n], a[n]) for n in a)


def test_coordinate_table_of_a_width_is_built_once_and_reused(tiny_resnet20):
    net = make_net(tiny_resnet20)
    assert net.table(0.5)[0] is net.table(0.5)[0]
    assert net.table(0.5)[0] is not net.table(1.0)[0]


def test_copy_head_makes_dst_produce_exactly_what_src_produces():
    torch.manual_seed(0)
    inr = INR(num_heads=3, out_dim=9, hidden=8, layers=2, num_freqs=4)
    with torch.no_grad():
        inr.res_scale.uniform_(0.05, 0.5)  # make the per-head residual scales differ too
    coords = torch.rand(20, 6)
    src_out = inr(coords, [(0, 0, 20)])[0]
    other_before = inr(coords, [(2, 0, 20)])[0]
    assert not torch.allclose(inr(coords, [(1, 0, 20)])[0], src_out)
    inr.copy_head(0, 1)
    assert torch.equal(inr(coords, [(1, 0, 20)])[0], src_out)
    assert torch.equal(inr(coords, [(0, 0, 20)])[0], src_out)  # src untouched
    assert torch.equal(inr(coords, [(2, 0, 20)])[0], other_before)  # bystanders untouched
    assert torch.equal(inr.res_scale[:, 1], inr.res_scale[:, 0])


def test_copied_head_is_independent_of_its_source_afterwards():
    torch.manual_seed(0)
    inr = INR(num_heads=2, out_dim=1, hidden=8, layers=1, num_freqs=2)
    inr.copy_head(0, 1)
    with torch.no_grad():
        inr.w_out[0].add_(1.0)
    coords = torch.rand(5, 6)
    assert not torch.allclose(inr(coords, [(0, 0, 5)])[0], inr(coords, [(1, 0, 5)])[0])


def test_grouped_segment_mm_applies_each_rows_head():
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(7, 8, generator=g), torch.randn(3, 8, 8, generator=g), torch.randn(3, 8, generator=g)
    segments = [(2, 0, 3), (0, 3, 4), (2, 4, 7)]
    out = grouped_segment_mm(x, w, b, SegmentPlan.build(segments, "cpu"))
    rows = [x[r] @ w[h] + b[h] for h, s, e in segments for r in range(s, e)]
    assert torch.allclose(out, torch.stack(rows), atol=1e-6)


def test_output_columns_are_the_matching_columns_of_the_full_output():
    torch.manual_seed(0)
    inr = INR(num_heads=2, out_dim=9, hidden=8, layers=1, num_freqs=2)
    coords, segs = torch.rand(6, 6), [(0, 0, 4), (1, 4, 6)]
    full = inr(coords, segs)
    centre = torch.tensor([4])
    part = inr(coords, segs, [None, centre])
    assert torch.equal(part[0], full[0])
    assert part[1].shape == (2, 1)
    assert torch.allclose(part[1], full[1][:, centre], atol=1e-6)


def test_fourier_features_shape_and_values():
    x = torch.rand(5, 6)
    ff = fourier_features(x, 3)
    assert ff.shape == (5, 6 * 2 * 3)
    angles = x.double()[..., None] * (2.0 ** torch.arange(3, dtype=torch.float64)) * math.pi
    expected = torch.cat([angles.sin(), angles.cos()], -1).flatten(1)
    assert torch.allclose(ff.double(), expected, atol=1e-5)


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
def test_fourier_features_stay_fp32_under_bf16_autocast(input_dtype):
    x = torch.rand(8, 6)
    reference = fourier_features(x.to(input_dtype).float(), 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ff = fourier_features(x.to(input_dtype), 8)
    assert ff.dtype == torch.float32
    assert ff.shape == (8, 6 * 2 * 8)
    assert torch.equal(ff, reference)


def test_generation_under_bf16_autocast_stays_close_to_fp32(tiny_resnet20):
    net = make_net(tiny_resnet20).eval()
    ref = net.generate(0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = net.generate(0.5)
    for name, w in ref.items():
        assert low[name].shape == w.shape
        assert torch.allclose(low[name].float(), w, atol=0.05 * w.abs().max().item() + 1e-3), name


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_activating_part_of_the_plan_leaves_the_active_tensors_unchanged(tiny_resnet20, fraction):
    """Entry coordinates are fixed against the whole plan, so a stage sees the same tensors."""
    net = make_net(tiny_resnet20).eval()
    whole = net.generate(fraction)
    net.activate(tiny_resnet20.layers[:5])  # stem, layer1.0, layer1.1: whole blocks
    part = net.generate(fraction)
    assert set(part) == {f"{l.name}.{k}" for l in tiny_resnet20.layers[:5] for k in ("weight", "bias")}
    for name, w in part.items():
        assert torch.equal(w, whole[name]), name


def test_activating_a_layer_outside_the_plan_is_an_error_naming_it(tiny_resnet20):
    net = make_net(tiny_resnet20, "last_block")
    with pytest.raises(ValueError, match="stem"):
        net.activate((tiny_resnet20.stem,))
