"""neumeta_dist.baselines.slimmable: the US-Nets baseline — slicing + BN statistics equal a plain BN
network of that width, the budget matches the pipeline's, and a real (tiny) run writes the
results schema and re-evaluates from its saved network."""
from __future__ import annotations

import json

import pytest
import torch

from neumeta_dist.baselines.slimmable import Slimmable, budget_steps, calibrate, from_teacher, run
from neumeta_dist.config import load_config
from neumeta_dist.models.family import Teacher
from neumeta_dist.models.registry import build_family
from neumeta_dist.recipe.stages import generated_layers, metamorphic_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise(net: torch.nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_a_width_is_the_bn_network_of_its_leading_channels_with_its_own_statistics(fraction):
    family = build_family("resnet20", 0.25, in_channels=1, num_classes=10)
    groups = metamorphic_groups(family, generated_layers(family, "authors"), "inner")
    sizes = family.sizes(fraction, groups)
    slim = Slimmable(family)
    _randomise(slim)
    x = torch.randn(64, 1, 12, 12)
    stats = calibrate(slim, sizes, x, chunk=64)
    # the same network built at that width from sliced weights, BN in eval mode on those stats
    plain = Teacher(family, sizes)
    state = {}
    for name, t in plain.state_dict().items():
        src = slim.net.state_dict()[name]
        state[name] = src[tuple(slice(0, n) for n in t.shape)] if t.dim() else src
    for spec in family.layers:
        if not spec.is_linear:
            key = spec.name.replace(".", "_")
            state[f"norms.{key}.running_mean"], state[f"norms.{key}.running_var"] = stats[spec.name]
    plain.load_state_dict(state)
    assert torch.allclose(slim(x, sizes, stats), plain.eval()(x), atol=1e-5)
    # one chunk: the batch-statistics forward differs only by BN's unbiased running variance
    assert torch.allclose(slim(x, sizes), slim(x, sizes, stats), atol=1e-2)


def test_started_from_the_teacher_its_full_width_is_the_teacher_and_its_narrow_widths_its_strongest_channels():
    family = build_family("resnet20", 0.25, in_channels=1, num_classes=10)
    groups = metamorphic_groups(family, generated_layers(family, "authors"), "inner")
    teacher = Teacher(family)
    _randomise(teacher)
    with torch.no_grad():
        for bn in teacher.norms.values():
            bn.running_var.uniform_(0.5, 2.0)
    slim = Slimmable(family)
    from_teacher(slim, {"state_dict": teacher.state_dict()}, groups)
    x = torch.randn(16, 1, 12, 12)
    full = family.full_sizes()
    stats = {s.name: (slim.net.norms[s.name.replace(".", "_")].running_mean,
                      slim.net.norms[s.name.replace(".", "_")].running_var) for s in family.layers if not s.is_linear}
    # the permutation keeps the function: the teacher's logits, on the teacher's statistics
    assert torch.allclose(slim(x, full, stats), teacher.eval()(x), atol=1e-4)
    # every scaled group is ordered by importance (what nested widths keep), which the teacher was not
    from neumeta_dist.core.smoothing import importance_order
    for g in groups:
        assert importance_order(family, slim.net.folded(), g).tolist() == list(range(family.full_sizes()[g]))
    assert any(importance_order(family, teacher.folded(), g).tolist() != list(range(family.full_sizes()[g]))
               for g in groups)


def test_the_equal_footing_budget_counts_the_stages_only_and_each_width_reads_its_own_images():
    from neumeta_dist.baselines.slimmable import images_per_step
    cfg = load_config(None, ["teacher.epochs=2", "train.max_steps=30", "data.batch_size=100",
                             "train.widths_per_step=4", "slimmable.budget=stages", "slimmable.batches=per_width"])
    assert budget_steps(cfg, 1000, 6) == 180 and images_per_step(cfg) == 400


def test_budget_is_the_pipelines_image_passes():
    cfg = load_config(None, ["teacher.epochs=2", "train.max_steps=30", "data.batch_size=100",
                             "train.widths_per_step=4"])
    # teacher: 2 epochs of 1,000 images = 5 steps of 4 × 100; stages: 6 × 30 steps
    assert budget_steps(cfg, 1000, 6) == 5 + 180


def test_a_tiny_run_writes_results_with_kinds_and_provenance_then_reevaluates(tmp_path):
    args = ["data.dataset=synthetic", "data.train_limit=512", "data.test_limit=256", "data.batch_size=64",
            "model.width=0.25", "meta.min_width=0.5", "meta.train_widths=[0.5,1.0]",
            "eval.widths=[0.25,0.75,1.0]", "eval.calib_samples=128", f"run_dir={tmp_path}"]
    first = run(load_config(None, args), steps=3)
    assert (tmp_path / "slimmable.pt").is_file() and (tmp_path / "results.json").is_file()
    assert [(w["width"], w["kind"]) for w in first["widths"]] == [(0.25, "outside"), (0.75, "held_out"),
                                                                  (1.0, "trained")]
    assert first["recipe"] == "slimmable" and first["steps"] == 3 and first["images"] == 3 * 64 \
        and first["image_passes"] == 3 * 64 * 4  # one batch for every width (US-Nets)
    assert len(first["commit"].split("+")[0]) == 40 and first["config"]["meta"]["train_widths"] == [0.5, 1.0]
    again = run(load_config(None, args))  # slimmable.pt exists: evaluated, not retrained
    strip = lambda r: {k: v for k, v in r.items() if k not in ("date", "command")}
    assert strip(again) == strip(first)
    assert json.loads((tmp_path / "results.json").read_text())["widths"] == again["widths"]


def test_the_equal_footing_run_resumes_bitwise_from_its_checkpoint_and_keeps_its_best_on_validation(
        tmp_path, monkeypatch):
    import neumeta_dist.baselines.slimmable as slimmable
    from neumeta_dist.training.teacher import fit

    args = ["data.dataset=synthetic", "data.train_limit=512", "data.test_limit=128", "data.batch_size=32",
            "data.val_fraction=0.25", "data.final_fraction=0.25", "model.width=0.25", "teacher.epochs=1",
            "meta.train_widths=[0.5,1.0]", "meta.min_width=0.5", "eval.widths=[0.5,0.75,1.0]",
            "eval.calib_samples=32", "eval.splits=[val,final]", "train.widths_per_step=3", "train.select_every=2",
            "train.save_every=2", "slimmable.init=teacher", "slimmable.teacher_kd=1.0",
            "slimmable.batches=per_width", "slimmable.ema=true", "slimmable.lr=0.01"]
    # a teacher for it to start from and distil
    teacher_cfg = load_config(None, args + [f"run_dir={tmp_path / 'teacher'}"])
    from neumeta_dist.distributed.accelerator import make_accelerator
    from neumeta_dist.training.context import RunContext
    ctx = RunContext.load(teacher_cfg)
    net, acc = fit(Teacher(ctx.family), teacher_cfg, make_accelerator(), ctx.splits, "teacher")
    path = tmp_path / "teacher.pt"
    torch.save({"state_dict": net.state_dict(), "family": __import__("dataclasses").asdict(ctx.family),
                "accuracy": acc, "params": 0}, path)
    args.append(f"teacher.checkpoint={path}")

    whole = run(load_config(None, args + [f"run_dir={tmp_path / 'whole'}"]), steps=6)
    # the same run killed right after its step-4 checkpoint, then started again
    save = slimmable._State.save

    def save_then_die(self, step, *a, **kw):
        save(self, step, *a, **kw)
        if step == 4:
            raise KeyboardInterrupt
    monkeypatch.setattr(slimmable._State, "save", save_then_die)
    cut = load_config(None, args + [f"run_dir={tmp_path / 'cut'}"])
    with pytest.raises(KeyboardInterrupt):
        run(cut, steps=6)
    saved_steps = []

    def save_and_count(self, step, *a, **kw):
        saved_steps.append(step)
        save(self, step, *a, **kw)
    monkeypatch.setattr(slimmable._State, "save", save_and_count)
    resumed = run(cut, steps=6)
    assert saved_steps == [6]  # it went on from step 4 (a restart would have saved at 2 and 4 again)
    a = torch.load(tmp_path / "whole" / "slimmable.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "slimmable.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"]["shadow"][k], b["ema"]["shadow"][k]) for k in a["ema"]["shadow"])
    assert [w["by_split"] for w in resumed["widths"]] == [w["by_split"] for w in whole["widths"]]
    # the result is the best EMA network on validation, and every split was scored
    assert whole["selected_step"] in (2, 4, 6) and set(whole["val"]) == {0.5, 1.0}
    assert set(whole["widths"][0]["by_split"]) == {"val", "final", "test"} and "by_split" in whole["teacher"]
