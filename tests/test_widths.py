"""neumeta_dist.recipe.widths: the training widths (range or discrete set) and the kind of an
evaluated width — trained, held out inside the range, outside it — with its novel groups."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from neumeta_dist.config import ConfigError, load_config
from neumeta_dist.models.registry import build_family
from neumeta_dist.recipe.stages import generated_layers, metamorphic_groups
from neumeta_dist.recipe.widths import TrainingWidths

DEMO = Path(__file__).resolve().parents[1] / "configs" / "blockwise.yaml"
W050 = Path(__file__).resolve().parents[1] / "configs" / "fashion_mnist_resnet20_w050.yaml"


@pytest.fixture
def w050():
    """ResNet-20 at width 0.5 (8/16/32) and the authors' metamorphic groups."""
    family = build_family("resnet20", 0.5, in_channels=1, num_classes=10)
    groups = metamorphic_groups(family, generated_layers(family, "authors"), "inner")
    return family, groups, (lambda w: family.sizes(w, groups))


def test_discrete_draws_stay_in_the_set_and_keep_the_sandwich():
    tw = TrainingWidths(0.5, 1.0, (0.5, 0.75, 1.0))
    draws = [[tw.draw(m, True, random.Random(f"{s}/{m}")) for m in range(4)] for s in range(200)]
    assert all(d[0] == 1.0 and d[1] == 0.5 for d in draws)
    assert {x for d in draws for x in d[2:]} == {0.5, 0.75, 1.0}


def test_continuous_draws_cover_the_range():
    tw = TrainingWidths(0.5, 1.0)
    rest = [tw.draw(2, True, random.Random(s)) for s in range(200)]
    assert all(0.5 <= x <= 1.0 for x in rest) and len(set(rest)) == 200


def test_kinds_and_novel_groups_of_the_w050_evidence_widths(w050):
    family, groups, sizes = w050
    tw = TrainingWidths(0.5, 1.0, (0.5, 0.75, 1.0))
    stage = lambda names: sorted({n.split(".")[0] for n in names})
    assert tw.kind(0.25, sizes) == "outside" and tw.kind(0.375, sizes) == "outside"
    for w in (0.5, 0.75, 1.0):
        assert tw.describe(w, sizes, groups) == {"seen": True, "kind": "trained", "novel_groups": []}
    # 0.625 and 0.875: every group at a size training never generated (5/10/20, 7/14/28)
    for w in (0.625, 0.875):
        d = tw.describe(w, sizes, groups)
        assert d["kind"] == "held_out" and not d["seen"] and d["novel_groups"] == sorted(groups)
    # 0.5625 etc.: layer1 (8 channels) rounds onto a trained count, layer2/3 do not
    for w in (0.5625, 0.6875, 0.8125, 0.9375):
        d = tw.describe(w, sizes, groups)
        assert d["kind"] == "held_out" and stage(d["novel_groups"]) == ["layer2", "layer3"], (w, d)


def test_a_fraction_that_rounds_onto_a_trained_network_is_trained(w050):
    _, _, sizes = w050
    tw = TrainingWidths(0.5, 1.0, (0.5, 0.75, 1.0))
    assert sizes(0.751) == sizes(0.75) and tw.kind(0.751, sizes) == "trained"


def test_continuous_range_trains_every_width_inside_it(w050):
    _, groups, sizes = w050
    tw = TrainingWidths(0.5, 1.0)
    assert tw.describe(0.6, sizes, groups) == {"seen": True, "kind": "trained", "novel_groups": []}
    assert tw.kind(0.4, sizes) == "outside" and tw.novel_groups(0.25, sizes, groups) == sorted(groups)


def test_step_rng_draws_from_the_configured_set():
    from neumeta_dist.training.loop import step_rng
    cfg = load_config(W050)
    drawn = {step_rng(cfg, s, m, 0)[0] for s in range(100) for m in range(4)}
    assert drawn == {0.5, 0.75, 1.0}


def test_stage_stream_continue_offsets_each_stage_by_the_steps_before_it():
    from neumeta_dist.training.loop import stream_offset
    repeat, cont = load_config(DEMO), load_config(DEMO, ["train.stage_stream=continue"])
    assert [stream_offset(repeat, k, 300) for k in (1, 2, 3)] == [0, 0, 0]
    assert [stream_offset(cont, k, 300) for k in (1, 2, 3)] == [0, 300, 600]


@pytest.mark.parametrize("widths", ["[0.6,1.0]", "[0.5,0.9]", "[0.5]"])
def test_train_widths_must_span_the_range(widths):
    with pytest.raises(ConfigError, match="meta.train_widths"):
        load_config(DEMO, [f"meta.train_widths={widths}"])
