"""neumeta_dist.core.coords: the coordinate table, its normalisation and noise, and output splitting."""
from __future__ import annotations

import pytest
import torch

from neumeta_dist.core.coords import build_table, centre_columns, normalise, split_output
from neumeta_dist.models.registry import build_family
from neumeta_dist.recipe.stages import metamorphic_groups

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = [("resnet20", 0.25, 1), ("resnet18", 0.0625, 3), ("resnet50", 0.03125, 3)]


def _table(name, width, in_ch, fraction=1.0):
    family = build_family(name, width, in_channels=in_ch)
    groups = metamorphic_groups(family, family.layers, "all")
    sizes = family.sizes(fraction, groups)
    norm = max(family.full_sizes().values())
    return family, sizes, build_table(family.layers, sizes, norm)


@pytest.mark.parametrize("name, width, in_ch", FAMILIES)
@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_row_count_is_one_row_per_channel_pair_plus_one_per_bias(name, width, in_ch, fraction):
    family, sizes, table = _table(name, width, in_ch, fraction)
    expected = sum(sizes[l.out_group] * sizes[l.in_group] + sizes[l.out_group] for l in family.layers)
    assert len(table) == expected
    assert table.index.shape == (expected, 3) and table.extent.shape == (expected, 3)


@pytest.mark.parametrize("name, width, in_ch", FAMILIES)
def test_entries_tile_the_table_contiguously_in_layer_order(name, width, in_ch):
    family, sizes, table = _table(name, width, in_ch, 0.5)
    names = [f"{l.name}.{kind}" for l in family.layers for kind in ("weight", "bias")]
    assert [e.name for e in table.entries] == names
    assert table.entries[0].start == 0
    assert table.entries[-1].end == len(table)
    for prev, nxt in zip(table.entries, table.entries[1:]):
        assert nxt.start == prev.end
    # the entry column of every row names the entry whose slice holds it
    for eid, e in enumerate(table.entries):
        assert torch.all(table.index[e.start:e.end, 0] == eid)


def test_entry_shapes_kernels_and_fan_ins_match_the_layers(tiny_resnet20):
    family = tiny_resnet20
    sizes = family.sizes(0.5, metamorphic_groups(family, family.layers, "inner"))
    table = build_table(family.layers, sizes, 16)
    by_name = {e.name: e for e in table.entries}
    for layer in family.layers:
        w, b = by_name[f"{layer.name}.weight"], by_name[f"{layer.name}.bias"]
        assert w.shape == layer.weight_shape(sizes)
        assert w.end - w.start == sizes[layer.out_group] * sizes[layer.in_group]
        assert w.kernel == max(layer.k, 1) and w.fan_in == sizes[layer.in_group]
        assert b.shape == (sizes[layer.out_group],) and b.kernel == 1 and b.fan_in == 1


def test_weight_rows_enumerate_every_channel_pair_out_major(tiny_resnet20):
    family = tiny_resnet20
    table = build_table(family.layers, family.full_sizes(), 16)
    e = next(x for x in table.entries if x.name == "layer2.0.conv1.weight")
    o, i = e.shape[:2]
    rows = table.index[e.start:e.end, 1:].long()
    expected = torch.tensor([[a, b] for a in range(o) for b in range(i)])
    assert torch.equal(rows, expected)
    bias = next(x for x in table.entries if x.name == "layer2.0.conv1.bias")
    assert torch.equal(table.index[bias.start:bias.end, 1].long(), torch.arange(o))
    assert torch.all(table.index[bias.start:bias.end, 2] == 0)


def test_custom_heads_map_entries_to_the_given_head(tiny_resnet20):
    layers = tiny_resnet20.layers[:3]
    heads = {f"{l.name}.{k}": 0 for l in layers for k in ("weight", "bias")}
    table = build_table(layers, tiny_resnet20.full_sizes(), 16, heads)
    assert [h for h, _, _ in table.segments] == [0] * 6
    assert [(s, e) for _, s, e in table.segments] == [(e.start, e.end) for e in table.entries]


@pytest.mark.parametrize("fraction", [1.0, 0.3])
def test_normalised_channel_positions_lie_in_unit_interval_and_extents_are_divided_by_norm_width(
        tiny_resnet20, fraction):
    family, norm = tiny_resnet20, 16
    sizes = family.sizes(fraction, metamorphic_groups(family, family.layers, "all"))
    table = build_table(family.layers, sizes, norm)
    coords = normalise(table)
    assert coords.shape == (len(table), 6)
    pos, ext = coords[:, :3], coords[:, 3:]
    assert torch.all(pos >= 0) and torch.all(pos < 1)
    assert torch.allclose(ext, table.extent / norm)
    for eid, e in enumerate(table.entries):
        rows = coords[e.start:e.end]
        o = e.shape[0]
        assert torch.allclose(rows[:, 0], torch.full((len(rows),), eid / (2 * len(family.layers))))
        assert torch.allclose(rows[:, 4], torch.full((len(rows),), o / norm))
        assert torch.allclose(rows[:, 5], torch.full((len(rows),), e.fan_in / norm))
        # the out position of channel c is c / (current width)
        assert torch.allclose(rows[:, 1], table.index[e.start:e.end, 1] / o)


def test_noise_jitters_only_channel_indices(tiny_resnet20):
    family = tiny_resnet20
    table = build_table(family.layers, family.full_sizes(), 16)
    clean = normalise(table)
    noisy = normalise(table, noise=1.0, generator=torch.Generator().manual_seed(0))
    # entry column and extents are untouched
    assert torch.equal(noisy[:, 0], clean[:, 0])
    assert torch.equal(noisy[:, 3:], clean[:, 3:])
    # out indices move everywhere; in indices move on weight rows with more than one input
    assert (noisy[:, 1] != clean[:, 1]).float().mean() > 0.99
    is_bias = torch.zeros(len(table), dtype=torch.bool)
    for e in table.entries:
        if e.name.endswith(".bias"):
            is_bias[e.start:e.end] = True
    assert torch.equal(noisy[is_bias, 2], clean[is_bias, 2])
    multi_in = ~is_bias & (table.extent[:, 2] > 1)
    assert (noisy[multi_in, 2] != clean[multi_in, 2]).float().mean() > 0.99
    # jitter is bounded by ±noise/2 in index units
    jitter = (noisy[:, 1:3] - clean[:, 1:3]) * table.extent[:, 1:3]
    assert jitter.abs().max() <= 0.5 + 1e-5


def test_noise_is_reproducible_from_the_generator(tiny_resnet20):
    table = build_table(tiny_resnet20.layers, tiny_resnet20.full_sizes(), 16)
    a = normalise(table, 1.0, torch.Generator().manual_seed(3))
    b = normalise(table, 1.0, torch.Generator().manual_seed(3))
    c = normalise(table, 1.0, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_split_output_reshapes_each_entry_and_divides_weights_by_fan_in(tiny_resnet20):
    family = tiny_resnet20
    sizes = family.sizes(0.5, metamorphic_groups(family, family.layers, "inner"))
    table = build_table(family.layers, sizes, 16)
    K = 3
    cols = centre_columns(table, K)
    g = torch.Generator().manual_seed(0)
    outs = [torch.randn(e.end - e.start, K * K if c is None else len(c), generator=g)
            for e, c in zip(table.entries, cols)]
    tensors = split_output(outs, table)
    assert list(tensors) == [e.name for e in table.entries]
    for e, o in zip(table.entries, outs):
        t = tensors[e.name]
        assert t.shape == e.shape
        assert torch.allclose(t * e.fan_in, o.reshape(e.shape))
    # e.g. a 3×3 conv: row (out a, in b) holds the kernel of channel pair (a, b)
    e = next(x for x in table.entries if x.name == "layer1.0.conv2.weight")
    i = outs[table.entries.index(e)]
    a, b = e.shape[0] - 1, e.shape[1] - 1
    assert torch.allclose(tensors[e.name][a, b] * e.fan_in, i[a * e.shape[1] + b].view(3, 3))


def test_centre_columns_pick_the_centre_of_the_largest_kernel():
    family = build_family("resnet18", 0.0625)  # a 7×7 stem, 3×3 and 1×1 convs, a linear layer
    table = build_table(family.layers, family.full_sizes(), 32)
    cols = dict(zip([e.name for e in table.entries], centre_columns(table, 7)))
    assert cols["stem.weight"] is None
    grid = torch.arange(49).view(7, 7)
    assert torch.equal(cols["layer1.0.conv1.weight"], grid[2:5, 2:5].flatten())
    assert torch.equal(cols["layer2.0.down.weight"], torch.tensor([24]))
    assert torch.equal(cols["fc.weight"], torch.tensor([24]))
    assert torch.equal(cols["stem.bias"], torch.tensor([24]))


def test_plan_entry_ids_give_a_tensor_the_same_coordinates_in_any_subset(tiny_resnet20):
    family = tiny_resnet20
    names = [f"{l.name}.{k}" for l in family.layers for k in ("weight", "bias")]
    ids = {n: i for i, n in enumerate(names)}
    whole = build_table(family.layers, family.full_sizes(), 16, entry_ids=ids, n_entries=len(names))
    subset = build_table(family.layers[3:6], family.full_sizes(), 16, entry_ids=ids, n_entries=len(names))
    cw, cs = normalise(whole), normalise(subset)
    by_name = {e.name: e for e in whole.entries}
    for e in subset.entries:
        w = by_name[e.name]
        assert torch.equal(cs[e.start:e.end], cw[w.start:w.end]), e.name
        assert e.head == w.head == ids[e.name]


def test_nested_tables_place_a_channel_at_the_same_position_at_every_width(tiny_resnet20):
    """meta.channel_coords=nested: channel c is at c / C_full whatever the width, the size
    fields still give the current width, and at full width nothing differs from NeuMeta's."""
    from neumeta_dist.recipe.stages import generated_layers, metamorphic_groups
    layers = generated_layers(tiny_resnet20, "authors")
    groups = metamorphic_groups(tiny_resnet20, layers, "inner")
    full = tiny_resnet20.full_sizes()
    at = lambda f, nested: build_table(layers, tiny_resnet20.sizes(f, groups), 16,
                                       full_sizes=full if nested else None)
    assert torch.equal(normalise(at(1.0, True)), normalise(at(1.0, False)))
    half, wide = normalise(at(0.5, True)), normalise(at(1.0, True))
    t = at(0.5, True)
    e = next(e for e in t.entries if e.name == "layer3.1.conv1.weight")  # 8 of 16 out channels
    rows = half[e.start:e.end]
    assert torch.allclose(rows[:, 1].unique(), torch.arange(8) / 16)  # the leading half of the positions
    assert torch.allclose(rows[:, 4], torch.tensor(8 / 16))  # out size: the current width
    ew = next(e for e in at(1.0, True).entries if e.name == "layer3.1.conv1.weight")
    assert torch.allclose(wide[ew.start:ew.end, 4], torch.tensor(16 / 16))  # ... which the INR sees


def test_size_noise_moves_only_the_size_fields_by_one_factor_per_network(tiny_resnet20):
    """inr.size_noise: one jitter factor for the whole table's sizes; channel positions and
    the other draws stay as without it (the channel noise is drawn first)."""
    from neumeta_dist.recipe.stages import generated_layers, metamorphic_groups
    layers = generated_layers(tiny_resnet20, "authors")
    groups = metamorphic_groups(tiny_resnet20, layers, "inner")
    table = build_table(layers, tiny_resnet20.sizes(0.5, groups), 16)
    g = lambda: torch.Generator().manual_seed(3)
    plain, jittered = normalise(table, 0.2, g()), normalise(table, 0.2, g(), size_noise=0.4)
    assert torch.equal(plain[:, :4], jittered[:, :4])
    ratio = jittered[:, 4:] / plain[:, 4:]
    assert torch.allclose(ratio, ratio[0, 0].expand_as(ratio)) and 0.8 <= ratio[0, 0] <= 1.2
    assert not torch.allclose(ratio[0, 0], torch.tensor(1.0))
    assert torch.equal(normalise(table, 0.2, g(), size_noise=0.0), plain)
