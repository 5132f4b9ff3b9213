"""The ImageNet and CIFAR-100 configs run the recommended recipe — the evidence protocol's INR
row (configs/protocol/one_stage.yaml) with nothing changed but what the family, the data and
the GPU need — their heads follow core/sizing.py's rule, and their headers state the budget
that rule and the config compute (no hand-made figure can drift from the file)."""
from __future__ import annotations

from pathlib import Path

import pytest

from neumeta_dist.config import load_config
from neumeta_dist.core.sizing import budget_lines, generation_cost, suggested_freqs, suggested_hidden
from neumeta_dist.models.registry import build_family
from neumeta_dist.recipe.stages import generated_layers, images_note

ROOT = Path(__file__).resolve().parents[1]
IMAGENET_TRAIN = 1_281_167 - 12_812  # ImageNet-1k less the 1 % holdout the headers assume
# config → (classes, training images, image side)
GPU_CONFIGS = {"imagenet_resnet18": (1000, IMAGENET_TRAIN, 224), "imagenet_resnet50": (1000, IMAGENET_TRAIN, 224),
               "cifar100_resnet56": (100, 45_000, 32)}
# What may differ from the protocol's INR row, and why: the data, the family and its heads, the
# budget, the teacher, the GPU path, the run's bookkeeping — and the protocol's discrete
# training widths, which exist to hold widths out for measuring (a product trains the range).
ALLOWED = {"run_dir", "data", "model", "teacher", "inr.hidden", "inr.num_freqs", "train.epochs", "train.max_steps",
           "train.select_every", "train.save_every", "train.precision", "train.channels_last", "eval.widths",
           "eval.splits", "meta.train_widths"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _allowed(key: str) -> bool:
    return key in ALLOWED or key.split(".")[0] in ALLOWED


def _config(name: str):
    return load_config(ROOT / f"configs/{name}.yaml", files=False)


def _family(name: str):
    cfg = _config(name)
    classes = GPU_CONFIGS[name][0]
    return cfg, build_family(cfg.model.family, cfg.model.width, in_channels=3, num_classes=classes)


@pytest.mark.parametrize("name", sorted(GPU_CONFIGS))
def test_the_gpu_configs_differ_from_the_protocols_inr_row_only_where_family_data_or_gpu_need(name):
    ours = _flat(_config(name).to_dict())
    row = _flat(load_config(ROOT / "configs/protocol/one_stage.yaml", files=False).to_dict())
    changed = sorted(k for k in row if ours[k] != row[k] and not _allowed(k))
    assert changed == [], f"{name} departs from the protocol's recipe at {changed}"
    cfg = _config(name)
    assert cfg.recipe.incremental is False and cfg.meta.channel_coords == "nested" and cfg.inr.size_noise > 0
    assert cfg.train.precision == "bf16" and cfg.train.channels_last and cfg.train.select_every > 0
    assert cfg.teacher.checkpoint.startswith(("torchvision:", "https://"))  # a zoo teacher by default


@pytest.mark.parametrize("name", sorted(GPU_CONFIGS))
def test_the_heads_follow_the_sizing_rule(name):
    cfg, family = _family(name)
    layers = generated_layers(family, cfg.meta.generated)
    side = GPU_CONFIGS[name][2]
    assert cfg.inr.hidden == suggested_hidden(family, layers, cfg.inr.layers, cfg.data.batch_size, side)
    assert cfg.inr.num_freqs == suggested_freqs(family, layers)


@pytest.mark.parametrize("name", sorted(GPU_CONFIGS))
def test_each_header_states_the_budget_the_config_computes(name):
    cfg, family = _family(name)
    _, n_train, side = GPU_CONFIGS[name]
    header = [l.removeprefix("#").strip() for l in (ROOT / f"configs/{name}.yaml").read_text().splitlines()
              if l.startswith("#")]
    for line in budget_lines(cfg, family, n_train, side):
        assert f"- {line}" in header, f"configs/{name}.yaml: the header should say\n#   - {line}"


def test_the_rule_reproduces_the_width_05_evidence_and_bounds_generation_by_the_student():
    """128 × 3 on the protocol's 8/16/32 ResNet-20 (the heads that won there); at ResNet-50 the
    capacity bound (512) would make one generation ~7× a micro-batch of training: the compute
    bound picks the size."""
    family = build_family("resnet20", 0.5, in_channels=1, num_classes=10)
    layers = generated_layers(family, "authors")
    assert suggested_hidden(family, layers, 3, 128, 28) == 128 and suggested_freqs(family, layers) == 8
    family = build_family("resnet50", in_channels=3, num_classes=1000)
    layers = generated_layers(family, "authors")
    assert generation_cost(family, layers, 512, 3, 12, 256, 224).ratio > 5
    hidden = suggested_hidden(family, layers, 3, 256, 224)
    assert hidden < 512 and generation_cost(family, layers, hidden, 3, 12, 256, 224).ratio <= 1.0


def test_a_multi_process_launch_of_an_epoch_budget_says_what_it_draws():
    """train.epochs counts one process's steps: 8 GPUs on imagenet_resnet18.yaml draw 160 epochs,
    and the stage says so (training/loop.py prints it) with the value that keeps 20."""
    cfg = _config("imagenet_resnet18")
    assert images_note(cfg, IMAGENET_TRAIN, 1) is None
    note = images_note(cfg, IMAGENET_TRAIN, 8)
    assert "on 8 processes the stage draws 160.0 epochs" in note and "train.epochs=2.5 keeps 20" in note
    assert images_note(load_config(ROOT / "configs/demo.yaml", files=False), 54_000, 8) is None  # max_steps
