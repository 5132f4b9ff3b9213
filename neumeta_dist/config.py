"""Typed configuration: dataclasses loaded from YAML (+ `base:` inheritance) and `a.b=c` overrides.

Every error is one line naming the file or override, the key, and what is allowed; unknown
keys are errors, never ignored.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .norms import NORMS, norm_strategy


class ConfigError(ValueError):
    pass


def choice(default: str, *allowed: str):
    return field(default=default, metadata={"choices": (default, *allowed)})


@dataclass
class DataConfig:
    # fashion-mnist/cifar*/synthetic: in memory (data/sources.py); shards: WebDataset (data/stream.py)
    dataset: str = choice("fashion-mnist", "cifar10", "cifar100", "synthetic", "shards")
    root: str = ""  # "" = the dataset's standard location; shards: the folder shard specs are relative to
    download: bool = False  # torchvision download, where the network allows
    batch_size: int = 128
    eval_batch_size: int = 512
    num_workers: int = 0  # DataLoader worker processes (shards: persistent, each reads its own shards)
    val_fraction: float = 0.1  # in memory: held out of the training split (shards: cut when written)
    train_limit: int = 0  # in memory: 0 = every training sample; > 0 for quick runs
    test_limit: int = 0
    # WebDataset shards: `index.json#<split>`, a brace pattern `train-{000000..000146}.tar` or a
    # `.txt` list of tars; `neumeta-dist shards` writes the splits train/holdout/test.
    shards: str = "index.json#train"
    val_shards: str = "index.json#holdout"  # model selection (cut from train by key hash)
    test_shards: str = "index.json#test"  # reported accuracy (ImageNet: its val/ folder)
    mode: str = choice("exact", "resampled")  # every sample once per epoch, or shards drawn with replacement
    batches_per_rank: int = 0  # resampled: batches per rank per epoch (0 = samples / (ranks × batch))
    shuffle_buffer: int = 1000  # samples per worker (encoded bytes: ~110 kB each for ImageNet)
    decode: str = choice("pil", "torchvision")
    image_size: int = 0  # crop size fed to the network; 0 = the shards' native size (fixed-size sources)
    min_crop_scale: float = 0.08  # RandomResizedCrop's smallest area fraction
    eval_crop: float = 0.875  # evaluation: resize to image_size / eval_crop, centre-crop image_size
    max_bad_fraction: float = 0.001  # unreadable samples tolerated (logged, counted) before a run stops


@dataclass
class ModelConfig:
    family: str = choice("resnet20", "resnet56", "resnet18", "resnet50", "lenet")
    width: float = 1.0  # multiplier of the family's stage channels (the teacher width)
    channels: list[int] = field(default_factory=list)  # explicit stage channels; overrides width


@dataclass
class TeacherConfig:
    checkpoint: str = ""  # load this teacher instead of training one
    # its layout: ours (teacher.pt), or a state dict in torchvision's ResNet layout (models/zoo.py)
    format: str = choice("auto", "neumeta", "torchvision")
    epochs: int = 2
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0


@dataclass
class SmoothingConfig:
    enabled: bool = True
    two_opt_rounds: int = 50  # improvement passes of the TSP heuristic
    # path: every group along a short path (NeuMeta); importance: the scalable groups most
    # important channel first (for nested coordinates: a narrow width keeps the best channels)
    order: str = choice("path", "importance")


@dataclass
class MetaConfig:
    """What the INR generates and which channel groups change with the width."""

    generated: str = choice("authors", "blocks", "all", "last_block")  # see recipe.py
    scale: str = choice("inner", "all")  # inner: hidden widths of blocks; all: streams too
    min_width: float = 0.25  # training range, as fractions of the full width
    max_width: float = 1.0
    # A discrete training set instead of the continuous range (widths.py): its extremes are
    # min_width and max_width; the widths between them that it leaves out are held out.
    train_widths: list[float] = field(default_factory=list)
    # Channel index → coordinate: its position in the current width (NeuMeta), or in the full
    # width, so narrower networks are the leading channels of wider ones (coords.py)
    channel_coords: str = choice("relative", "nested")
    # How the student replaces BN: fold + SkipInit α | plain fold | fold + per-width
    # recalibration | GroupNorm in teacher and student (norms.py: the strategy objects)
    norm: str = choice(*NORMS)
    alpha_init: float = 0.0  # SkipInit's residual scale of a newly generated block (0: identity)
    train_head: bool = True  # a classifier that is not generated is trained, shared across widths


@dataclass
class RecipeConfig:
    """The stage plan and how each stage starts (recipe.py, inr_init.py)."""

    name: str = "full"  # recorded in results.json: full, neumeta_last_block, no_incremental, ...
    incremental: bool = True  # False: every unit in one stage
    units_per_stage: int = 1
    init: str = choice("copy", "random", "recon")  # a new unit's INR heads
    warmup_steps: int = 0  # reconstruction warm-up of the new heads (needed by init=recon; any init)
    warmup_lr: float = 3e-3


@dataclass
class INRConfig:
    hidden: int = 128
    layers: int = 3
    num_freqs: int = 8
    activation: str = choice("relu", "elu", "gelu", "silu")
    residual_scale: float = 0.1
    heads: str = choice("per_tensor", "shared")
    coord_noise: float = 1.0
    # In training, every size field × (1 + U(−size_noise/2, size_noise/2)), one draw per
    # generated network (coords.normalise): the size input moves between the trained widths
    size_noise: float = 0.0


@dataclass
class LossConfig:
    ce: float = 100.0
    kd: float = 0.0
    kd_temperature: float = 4.0
    recon: float = 1.0
    recon_weighting: str = choice("abs", "none")  # element weights ∝ |w_teacher|, or plain MSE
    reg: float = 1e-3
    # In-place distillation (US-Nets): every narrower micro-batch also matches the soft
    # predictions (T = 1) of the step's full-width generated network on its own images.
    inplace_kd: float = 0.0


@dataclass
class TrainConfig:
    epochs: float = 1.0  # per stage
    max_steps: int = 0  # > 0 fixes the optimiser steps of each stage
    widths_per_step: int = 4  # micro-batches per step: one at full width, the rest sampled
    sandwich: bool = False  # the second micro-batch at min_width (the authors: off)
    # repeat: every stage draws the same data order and widths (seeded by its own step);
    # continue: stage k picks up the stream where stage k-1 stopped (fresh images and widths)
    stage_stream: str = choice("repeat", "continue")
    # The INR call of a step: on every rank, or each rank a slice of the rows (distributed/coordinate_parallel.py)
    generation: str = choice("replicated", "coordinate_parallel")
    lr: float = 8e-4  # INR
    weight_decay: float = 1e-4
    lr_alpha: float = 1e-4  # SkipInit residual scales
    lr_head: float = 7e-5  # shared classifier
    shared_weight_decay: float = 1e-2
    warmup_steps: int = 0  # linear lr warm-up of each stage, in steps
    warmup_fraction: float = 0.0  # ... or as a fraction of the stage's steps (the authors: 0.4)
    schedule: str = choice("constant", "cosine")
    grad_clip: float = 10.0
    clip_mode: str = choice("value", "norm")
    ema_decay: float = 0.995
    seed: int = 0
    log_every: int = 10
    save_every: int = 0  # steps between checkpoints (and one at each stage end); 0 = only at the end
    keep_checkpoints: int = 2
    # Held-out check of the EMA network every N steps; the best one is the stage's result
    # (selection.py). 0: the stage's last EMA network.
    select_every: int = 0
    resume: str = "auto"  # auto: the newest whole checkpoint of each stage; none: start over; or a checkpoint dir
    teacher_mode: str = choice("replicated", "sharded")  # KD teacher: on every rank, or a ZeRO-3 engine
    # How the step executes (execution.py); none of these changes what is computed beyond rounding.
    precision: str = choice("fp32", "bf16")  # bf16: autocast; Fourier features and the residual stream stay fp32
    compile: bool = False  # torch.compile of the INR trunk and the functional student (dynamic shapes)
    channels_last: bool = False  # NHWC images and teacher: the tensor cores' native conv layout


@dataclass
class EvalConfig:
    widths: list[float] = field(default_factory=lambda: [0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.875, 1.0])
    samples: int = 1  # noisy coordinate samples averaged into one network (1 = noise-free)
    calib_samples: int = 1024  # training images that recalibrate each width (meta.norm=recalib)
    use_ema: bool = True


@dataclass
class Config:
    run_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    inr: INRConfig = field(default_factory=INRConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Hash of what decides the trained weights: ties checkpoints to the config that wrote
        them. Where the run lives, how often it logs or saves and where it resumes from do not
        count, so a resumed run may change them."""
        d = self.to_dict()
        d.pop("run_dir")
        for key in ("log_every", "save_every", "keep_checkpoints", "resume"):
            d["train"].pop(key)
        d["teacher"].pop("format")  # how the file is read, not what it holds (and older digests stay valid)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    raw: dict = _read_yaml_chain(Path(path)) if path else {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.lr=1e-3")
        _set_dotted(raw, key.strip(), yaml.safe_load(value), source=f"override {item!r}")
    cfg = _build(Config, raw, prefix="", source=str(path) if path else "defaults")
    _validate(cfg, source=str(path) if path else "defaults")
    return cfg


def read_yaml(path: Path, what: str, not_found: str) -> Any:
    """A YAML file's content ({} when empty); a missing file raises `not_found`, invalid YAML
    a one-line error naming `what` and the file (experiment configs, SLURM profiles)."""
    if not path.is_file():
        raise ConfigError(not_found)
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path}: not valid YAML ({str(e).splitlines()[0]})") from None


def _read_yaml_chain(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path.is_file() and path.resolve() in seen:
        raise ConfigError(f"config {path}: 'base' chain loops back to itself")
    data = read_yaml(path, "config", f"config file {path} not found (pass an existing YAML, e.g. configs/demo.yaml)")
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: top level must be a mapping of sections")
    base = data.pop("base", None)
    if base is None:
        return data
    parent = _read_yaml_chain((path.parent / base), seen + (path.resolve(),))
    return _merge(parent, data)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _set_dotted(raw: dict, key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    node = raw
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: {p!r} is not a section")
    node[parts[-1]] = value


def _build(cls, raw: Any, prefix: str, source: str):
    raw = {} if raw is None else raw  # a section whose keys are all commented out
    if not isinstance(raw, dict):
        raise ConfigError(f"config {source}: section {prefix.rstrip('.') or '<top>'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"config {source}: unknown key {prefix}{unknown[0]} "
                          f"(allowed in {prefix.rstrip('.') or 'top level'}: {', '.join(fields)})")
    kwargs = {}
    for name, value in raw.items():
        kind, key = hints[name], prefix + name
        if dataclasses.is_dataclass(kind):
            kwargs[name] = _build(kind, value, key + ".", source)
        else:
            kwargs[name] = _coerce(value, kind, key, source)
    return cls(**kwargs)


def _coerce(value: Any, kind, key: str, source: str):
    origin = typing.get_origin(kind)
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config {source}: {key} must be a list of {item.__name__}, got {value!r}")
        return [_coerce(v, item, key, source) for v in value]
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"config {source}: {key} must be {kind.__name__}, got {value!r}")


def _validate(cfg: Config, source: str) -> None:
    def walk(obj, prefix):
        for f in dataclasses.fields(obj):
            value, key = getattr(obj, f.name), prefix + f.name
            if dataclasses.is_dataclass(value):
                walk(value, key + ".")
            elif "choices" in f.metadata and value not in f.metadata["choices"]:
                raise ConfigError(f"config {source}: {key}={value!r} is not allowed "
                                  f"(allowed: {', '.join(f.metadata['choices'])})")
    walk(cfg, "")
    checks = [
        (0 < cfg.meta.min_width <= cfg.meta.max_width <= 1, "meta.min_width/max_width",
         "need 0 < min_width <= max_width <= 1"),
        (not cfg.meta.train_widths or (len(cfg.meta.train_widths) >= 2
                                         and min(cfg.meta.train_widths) == cfg.meta.min_width
                                         and max(cfg.meta.train_widths) == cfg.meta.max_width),
         "meta.train_widths", "need >= 2 fractions, the smallest = meta.min_width, the largest = meta.max_width"),
        (cfg.loss.inplace_kd >= 0, "loss.inplace_kd", "need >= 0"),
        (all(0 < w <= 1 for w in cfg.eval.widths) and cfg.eval.widths, "eval.widths",
         "need a non-empty list of fractions in (0, 1]"),
        (cfg.train.widths_per_step >= 1, "train.widths_per_step", "need >= 1"),
        (cfg.recipe.units_per_stage >= 1, "recipe.units_per_stage", "need >= 1"),
        (cfg.recipe.init != "recon" or cfg.recipe.warmup_steps > 0, "recipe.warmup_steps",
         "init=recon fits the new heads by a warm-up: set recipe.warmup_steps > 0 (e.g. 1000)"),
        (not norm_strategy(cfg.meta.norm).skipinit or cfg.model.family != "lenet", "meta.norm",
         "lenet has no residual blocks for SkipInit: use meta.norm=fold"),
        (0 <= cfg.data.val_fraction < 1, "data.val_fraction", "need 0 <= val_fraction < 1"),
        (cfg.data.batch_size >= 1, "data.batch_size", "need >= 1"),
        (cfg.data.num_workers >= 0 and cfg.data.shuffle_buffer >= 0 and cfg.data.batches_per_rank >= 0
         and cfg.data.image_size >= 0, "data.num_workers/shuffle_buffer/batches_per_rank/image_size", "need >= 0"),
        (0 <= cfg.data.max_bad_fraction < 1, "data.max_bad_fraction", "need 0 <= max_bad_fraction < 1"),
        (0 < cfg.data.min_crop_scale <= 1 and 0 < cfg.data.eval_crop <= 1, "data.min_crop_scale/eval_crop",
         "need fractions in (0, 1]"),
        (cfg.data.dataset != "shards" or cfg.data.train_limit == cfg.data.test_limit == 0,
         "data.train_limit/test_limit", "in-memory datasets only: with shards, list fewer shards instead"),
        (all(math.isfinite(v) and v > 0 for v in (cfg.train.lr, cfg.train.lr_alpha, cfg.train.lr_head,
                                                  cfg.teacher.lr)), "train.lr*/teacher.lr", "need finite > 0"),
        (cfg.model.width > 0, "model.width", "need > 0"),
        (0 <= cfg.train.warmup_fraction < 1 and cfg.train.warmup_steps >= 0, "train.warmup_steps/warmup_fraction",
         "need warmup_steps >= 0 and 0 <= warmup_fraction < 1"),
        (not (cfg.train.warmup_steps and cfg.train.warmup_fraction), "train.warmup_steps/warmup_fraction",
         "set one of them (the other to 0)"),
        (cfg.train.select_every >= 0, "train.select_every", "need >= 0 (0: the stage's last EMA network)"),
        (cfg.train.select_every == 0 or cfg.data.dataset == "shards" or cfg.data.val_fraction > 0,
         "train.select_every", "selection scores the held-out split: set data.val_fraction > 0"),
        (0 <= cfg.train.ema_decay < 1, "train.ema_decay", "need 0 <= ema_decay < 1"),
        (cfg.eval.samples >= 1, "eval.samples", "need >= 1"),
        (0 <= cfg.inr.size_noise < 1, "inr.size_noise", "need 0 <= size_noise < 1 (a relative jitter of the sizes)"),
        (cfg.inr.layers >= 0 and cfg.inr.hidden >= 1 and cfg.inr.num_freqs >= 1, "inr",
         "need layers >= 0, hidden >= 1, num_freqs >= 1"),
    ]
    for ok, key, why in checks:
        if not ok:
            raise ConfigError(f"config {source}: {key}: {why}")


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


