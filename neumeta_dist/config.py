"""Typed configuration: dataclasses loaded from YAML (+ `base:` inheritance) and `a.b=c` overrides.

Every error is one line naming the file or override, the key, the value and what is allowed;
unknown keys are errors, never ignored. What is allowed is declared beside each key:
`choice(...)` for a string from a set, `num(default, range)` for a number (every int and float
key has one: `> 0`, `>= 1`, `[0, 1)`, `(0, 1]`, `any` finite), plus the checks that relate two
keys in `_validate`. A file must be UTF-8 YAML whose top level is a mapping, not empty, with no
key given twice; `base:` names another such file. Keys that name files (`teacher.checkpoint`,
`train.resume`) must exist when training, planning or submitting (`files=True`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .models import FAMILIES, is_remote
from .models.norms import NORMS, norm_strategy


class ConfigError(ValueError):
    pass


# Accelerate's tracker names (accelerate.tracking.LOGGER_TYPE_TO_CLASS): `train.log_with`
# is validated here without importing Accelerate (training/tracking.py opens them)
TRACKERS = ("tensorboard", "mlflow", "wandb", "aim", "comet_ml", "clearml", "dvclive", "swanlab", "trackio")


def tracker_names(log_with: str) -> list[str]:
    """`train.log_with` → the tracker names, in order ("" or "none": no tracker)."""
    names = [n.strip() for n in log_with.split(",") if n.strip()]
    return [] if names == ["none"] else names


def choice(default: str, *allowed: str):
    return field(default=default, metadata={"choices": (default, *allowed)})


def choice_list(default: list[str], *allowed: str):
    """A list key whose every item is one of `allowed` (and no item twice)."""
    return field(default_factory=lambda: list(default), metadata={"each_of": allowed})


@dataclass(frozen=True)
class Range:
    """The values a numeric key admits, written as its error shows them: `> 0`, `>= 1`,
    `[0, 1)`, `(0, 1]` or `any`; never NaN or infinite."""

    text: str

    def __post_init__(self):
        self.admits(0)  # a malformed declaration fails at import, not at the first bad value

    def admits(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        t = self.text
        if t == "any":
            return True
        if t[0] in "([":
            lo, hi = (float(x) for x in t[1:-1].split(","))
            return (lo < value if t[0] == "(" else lo <= value) and (value < hi if t[-1] == ")" else value <= hi)
        op, bound = t.split()
        return {">": value > float(bound), ">=": value >= float(bound)}[op]

    def __str__(self) -> str:
        return f"in {self.text}" if self.text[0] in "([" else self.text


def num(default: Any, allowed: str, note: str = ""):
    """A numeric key (or list of numbers: each item) and the range it must lie in; `note`
    says what a special value means (it follows the range in the error)."""
    meta = {"range": Range(allowed), "note": note}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    # fashion-mnist/cifar*/synthetic: in memory (data/sources.py); shards: WebDataset (data/stream.py)
    dataset: str = choice("fashion-mnist", "cifar10", "cifar100", "synthetic", "shards")
    root: str = ""  # "" = the dataset's standard location; shards: the folder shard specs are relative to
    download: bool = False  # torchvision download, where the network allows
    batch_size: int = num(128, ">= 1")
    eval_batch_size: int = num(512, ">= 1")
    num_workers: int = num(0, ">= 0")  # shard-reading worker processes, persistent (in-memory data is indexed in place)
    val_fraction: float = num(0.1, "[0, 1)")  # in memory: held out of the training split (shards: cut when written)
    # in memory: a second held-out split, read only by the evidence protocol's final evaluation
    # (docs/protocol.md): cut after the validation images from the same permutation
    final_fraction: float = num(0.0, "[0, 1)")
    # the permutation that cuts validation/final from the training images: its own seed, so
    # that every training seed is scored on the same held-out images (paired comparisons)
    split_seed: int = num(0, "[0, 2147483647]")
    train_limit: int = num(0, ">= 0", "0 = every sample")  # in memory: 0 = every training sample; > 0 for quick runs
    test_limit: int = num(0, ">= 0", "0 = every sample")
    # WebDataset shards: `index.json#<split>`, a brace pattern `train-{000000..000146}.tar` or a
    # `.txt` list of tars; `neumeta-dist shards` writes the splits train/holdout/test.
    shards: str = "index.json#train"
    val_shards: str = "index.json#holdout"  # model selection (cut from train by key hash)
    final_shards: str = ""  # the protocol's final split ("" = none)
    test_shards: str = "index.json#test"  # reported accuracy (ImageNet: its val/ folder)
    mode: str = choice("exact", "resampled")  # every sample once per epoch, or shards drawn with replacement
    # resampled: batches per rank per epoch
    batches_per_rank: int = num(0, ">= 0", "0 = samples / (ranks × batch)")
    shuffle_buffer: int = num(1000, ">= 0")  # samples per worker (encoded bytes: ~110 kB each for ImageNet)
    decode: str = choice("pil", "torchvision")
    # crop size fed to the network; 0 = the shards' native size (fixed-size sources)
    image_size: int = num(0, ">= 0", "0 = the shards' native size")
    min_crop_scale: float = num(0.08, "(0, 1]")  # RandomResizedCrop's smallest area fraction
    eval_crop: float = num(0.875, "(0, 1]")  # evaluation: resize to image_size / eval_crop, centre-crop image_size
    max_bad_fraction: float = num(0.001, "[0, 1)")  # unreadable samples tolerated (logged, counted) before a run stops


@dataclass
class ModelConfig:
    family: str = field(default="resnet20", metadata={"choices": FAMILIES})  # models.registry.register_family adds
    width: float = num(1.0, "> 0")  # multiplier of the family's stage channels (the teacher width)
    channels: list[int] = num([], ">= 1")  # explicit stage channels; overrides width


@dataclass
class TeacherConfig:
    checkpoint: str = ""  # load this teacher instead of training one
    # its layout: ours (teacher.pt), or a state dict in torchvision's ResNet layout (models/zoo.py)
    format: str = choice("auto", "neumeta", "torchvision")
    epochs: int = num(2, ">= 1")  # ignored (but counted by the slimmable budget) with teacher.checkpoint
    lr: float = num(0.1, "> 0")
    momentum: float = num(0.9, "[0, 1)")
    weight_decay: float = num(5e-4, ">= 0")
    label_smoothing: float = num(0.0, "[0, 1)")
    # teacher steps between checkpoints of stage 0 (and one at every epoch end); its own key:
    # a teacher step is one batch, an INR step several, and their counts differ by orders
    save_every: int = num(0, ">= 0", "0 = at epoch ends only")


@dataclass
class SmoothingConfig:
    enabled: bool = True
    two_opt_rounds: int = num(50, ">= 0")  # improvement passes of the TSP heuristic
    # path: every group along a short path (NeuMeta); importance: the scalable groups most
    # important channel first (for nested coordinates: a narrow width keeps the best channels)
    order: str = choice("path", "importance")


@dataclass
class MetaConfig:
    """What the INR generates and which channel groups change with the width."""

    generated: str = choice("authors", "blocks", "all", "last_block")  # see recipe/stages.py
    scale: str = choice("inner", "all")  # inner: hidden widths of blocks; all: streams too
    min_width: float = num(0.25, "(0, 1]")  # training range, as fractions of the full width
    max_width: float = num(1.0, "(0, 1]")
    # A discrete training set instead of the continuous range (recipe/widths.py): its extremes are
    # min_width and max_width; the widths between them that it leaves out are held out.
    train_widths: list[float] = num([], "(0, 1]")
    # Channel index → coordinate: its position in the current width (NeuMeta), or in the full
    # width, so narrower networks are the leading channels of wider ones (core/coords.py)
    channel_coords: str = choice("relative", "nested")
    # How the student replaces BN: fold + SkipInit α | plain fold | fold + per-width
    # recalibration | GroupNorm in teacher and student (models/norms.py: the strategy objects)
    norm: str = choice(*NORMS)
    alpha_init: float = num(0.0, "any")  # SkipInit's residual scale of a newly generated block (0: identity)
    train_head: bool = True  # a classifier that is not generated is trained, shared across widths


@dataclass
class RecipeConfig:
    """The stage plan and how each stage starts (recipe/stages.py, recipe/inr_init.py)."""

    name: str = "full"  # recorded in results.json: full, neumeta_last_block, no_incremental, ...
    incremental: bool = True  # False: every unit in one stage
    units_per_stage: int = num(1, ">= 1")
    init: str = choice("copy", "random", "recon")  # a new unit's INR heads
    warmup_steps: int = num(0, ">= 0")  # reconstruction warm-up of the new heads (needed by init=recon; any init)
    warmup_lr: float = num(3e-3, "> 0")


@dataclass
class INRConfig:
    hidden: int = num(128, ">= 1")
    layers: int = num(3, ">= 0")
    num_freqs: int = num(8, ">= 1")
    activation: str = choice("relu", "elu", "gelu", "silu")
    residual_scale: float = num(0.1, ">= 0")
    heads: str = choice("per_tensor", "shared")
    coord_noise: float = num(1.0, ">= 0")
    # In training, every size field × (1 + U(−size_noise/2, size_noise/2)), one draw per
    # generated network (coords.normalise): the size input moves between the trained widths
    size_noise: float = num(0.0, "[0, 1)")


@dataclass
class LossConfig:
    ce: float = num(100.0, ">= 0")
    kd: float = num(0.0, ">= 0")
    kd_temperature: float = num(4.0, "> 0")
    recon: float = num(1.0, ">= 0")
    recon_weighting: str = choice("abs", "none")  # element weights ∝ |w_teacher|, or plain MSE
    reg: float = num(1e-3, ">= 0")
    # In-place distillation (US-Nets): every narrower micro-batch also matches the soft
    # predictions (T = 1) of the step's full-width generated network on its own images.
    inplace_kd: float = num(0.0, ">= 0")


@dataclass
class TrainConfig:
    epochs: float = num(1.0, "> 0")  # per stage
    max_steps: int = num(0, ">= 0", "0 = train.epochs decide")  # > 0 fixes the optimiser steps of each stage
    widths_per_step: int = num(4, ">= 1")  # micro-batches per step: one at full width, the rest sampled
    sandwich: bool = False  # the second micro-batch at min_width (the authors: off)
    # repeat: every stage draws the same data order and widths (seeded by its own step);
    # continue: stage k picks up the stream where stage k-1 stopped (fresh images and widths)
    stage_stream: str = choice("repeat", "continue")
    # The INR call of a step: on every rank, or each rank a slice of the rows (distributed/coordinate_parallel.py)
    generation: str = choice("replicated", "coordinate_parallel")
    # experiment trackers, Accelerate's names, comma-separated (training/tracking.py): tensorboard, mlflow, wandb, aim, …
    log_with: str = "tensorboard"
    lr: float = num(8e-4, "> 0")  # INR
    weight_decay: float = num(1e-4, ">= 0")
    lr_alpha: float = num(1e-4, "> 0")  # SkipInit residual scales
    lr_head: float = num(7e-5, "> 0")  # shared classifier
    shared_weight_decay: float = num(1e-2, ">= 0")
    warmup_steps: int = num(0, ">= 0")  # linear lr warm-up of each stage, in steps
    warmup_fraction: float = num(0.0, "[0, 1)")  # ... or as a fraction of the stage's steps (the authors: 0.4)
    schedule: str = choice("constant", "cosine")
    grad_clip: float = num(10.0, ">= 0", "0 = no clipping")
    clip_mode: str = choice("value", "norm")
    ema_decay: float = num(0.995, "[0, 1)")
    seed: int = num(0, "[0, 2147483647]")  # numpy's seeds are 32-bit; each stage adds its number
    log_every: int = num(10, ">= 1")
    # steps between checkpoints (and one at each stage end)
    save_every: int = num(0, ">= 0", "0 = only at the stage end")
    keep_checkpoints: int = num(2, ">= 1")
    # Held-out check of the EMA network every N steps; the best one is the stage's result
    # (training/selection.py). 0: the stage's last EMA network.
    select_every: int = num(0, ">= 0", "0 = the stage's last EMA network")
    resume: str = "auto"  # auto: the newest whole checkpoint of each stage; none: start over; or a checkpoint dir
    teacher_mode: str = choice("replicated", "sharded")  # KD teacher: on every rank, or a ZeRO-3 engine
    # How the step executes (training/execution.py); none of these changes what is computed beyond rounding.
    precision: str = choice("fp32", "bf16")  # bf16: autocast; Fourier features and the residual stream stay fp32
    compile: bool = False  # torch.compile of the INR trunk and the functional student (dynamic shapes)
    channels_last: bool = False  # NHWC images and teacher: the tensor cores' native conv layout


@dataclass
class EvalConfig:
    widths: list[float] = num([0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.875, 1.0], "(0, 1]")
    samples: int = num(1, ">= 1")  # noisy coordinate samples averaged into one network (1 = noise-free)
    calib_samples: int = num(1024, ">= 1")  # training images that recalibrate each width (meta.norm=recalib)
    # held-out splits scored beside test (results.json: `by_split`); `final` is the evidence
    # protocol's and only its seed command asks for it (docs/protocol.md)
    splits: list[str] = choice_list(["val"], "val", "final")
    use_ema: bool = True
    # which networks keep their recalibration in <run>/calibration.pt (evaluation/calibration.py), so that
    # neumeta_dist.load(run).network(w) needs no data: every distinct one, or the evaluated widths'
    calibrate: str = choice("all", "evaluated")


@dataclass
class SlimmableConfig:
    """The universally slimmable baseline (baselines/slimmable.py); the `scratch`/`shared`/`pipeline`
    defaults are US-Nets as published, the others put it on the INR's footing (docs/protocol.md)."""

    # scratch: random init; teacher: the run's teacher, its scaled channels most important first
    init: str = choice("scratch", "teacher")
    teacher_kd: float = num(0.0, ">= 0")  # weight of the teacher's soft targets (T = 1) at every width
    # shared: one batch for every width of a step (US-Nets); per_width: each micro-batch its own
    # images, as the INR's micro-batches draw theirs
    batches: str = choice("shared", "per_width")
    # pipeline: the teacher's epochs + every INR stage's images; stages: the INR stages' steps only
    budget: str = choice("pipeline", "stages")
    lr: float = num(0.0, ">= 0", "0 = teacher.lr")
    ema: bool = False  # evaluate (and select) the EMA of its weights, decay train.ema_decay


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
    slimmable: SlimmableConfig = field(default_factory=SlimmableConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Hash of what decides the trained weights: ties checkpoints to the config that wrote
        them. Where the run lives, how often it logs or saves and where it resumes from do not
        count, so a resumed run may change them."""
        d = self.to_dict()
        d.pop("run_dir")
        for key in ("log_every", "save_every", "keep_checkpoints", "resume", "log_with"):
            d["train"].pop(key)
        d["eval"].pop("calibrate")  # what evaluation stores (and older digests stay valid)
        d["teacher"].pop("format")  # how the file is read, not what it holds (and older digests stay valid)
        d["teacher"].pop("save_every")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def load_config(path: str | Path | None = None, overrides: list[str] = (), files: bool = True) -> Config:
    """The config of `path` (+ its `base:` chain) with `overrides` applied, validated.

    `files`: check that the files it names exist (training, planning, submitting); off when
    reading back a finished run's config.yaml, whose named checkpoints may since be pruned
    (the commands that need one check it when they load it)."""
    raw: dict = _read_yaml_chain(Path(path)) if path else {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.lr=1e-3")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({_yaml_problem(e)})") from None
        _set_dotted(raw, key.strip(), parsed, source=f"override {item!r}")
    cfg = _build(Config, raw, prefix="", source=f"config {path}" if path else "config defaults")
    _validate(cfg, source=str(path) if path else "defaults", files=files)
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: the
    second `train:` section would otherwise replace the first without a word."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice",
                                                        key_node.start_mark)
            seen.add(key if isinstance(key, (str, int, float, bool)) else id(key_node))
        return super().construct_mapping(node, deep)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """One line: what PyYAML found and where."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{e.problem or e.context}{where}"
    return str(e).splitlines()[0]


def read_yaml(path: Path, what: str, not_found: str) -> Any:
    """A YAML file's content; a missing file raises `not_found`, and a directory, a file that
    is not UTF-8, invalid YAML, a key given twice or an empty file a one-line error naming
    `what` and the file (experiment configs, SLURM profiles)."""
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory: pass a YAML file")
    if not path.is_file():
        raise ConfigError(not_found)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}): "
                          "expected a YAML file") from None
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot be read ({e.strerror})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path}: not valid YAML ({_yaml_problem(e)})") from None
    if data is None:
        raise ConfigError(f"{what} {path} is empty: set at least one key"
                          + (" (or `base:` another file)" if what == "config" else ""))
    return data


def _read_yaml_chain(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path.is_file() and path.resolve() in seen:
        raise ConfigError(f"config {path}: 'base' chain loops back to itself")
    data = read_yaml(path, "config", f"config file {path} not found (pass an existing YAML, e.g. configs/demo.yaml)")
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: top level must be a mapping of sections, got {type(data).__name__}")
    if "base" not in data:
        return data
    base = data.pop("base")
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"config {path}: base={base!r} must be a file name (a string), e.g. base: demo.yaml")
    if not (path.parent / base).exists():
        raise ConfigError(f"config {path}: base={base!r}: {path.parent / base} not found (a path relative to this file)")
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
    """`raw` as the dataclass `cls`; errors start with `source` (`config <file>`, `profile <file>`)."""
    raw = {} if raw is None else raw  # a section whose keys are all commented out
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: section {prefix.rstrip('.') or '<top>'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key {prefix}{unknown[0]} "
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
            raise ConfigError(f"{source}: {key} must be a list of {item.__name__}, got {value!r}")
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
        if value is None:  # `teacher.checkpoint=` or `checkpoint:` with nothing after it: empty, as written
            return ""
    raise ConfigError(f"{source}: {key} must be {kind.__name__}, got {value!r}")


def check_fields(obj: Any, source: str, what: str = "config", prefix: str = "") -> None:
    """Every key of a config dataclass (sections included) against what its declaration
    allows: `choice` strings and `num` ranges. One line per error: file, key, value, allowed."""
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            check_fields(value, source, what, key + ".")
        elif "choices" in f.metadata and value not in f.metadata["choices"]:
            raise ConfigError(f"{what} {source}: {key}={value!r} is not allowed "
                              f"(allowed: {', '.join(f.metadata['choices'])})")
        elif "each_of" in f.metadata:
            allowed = f.metadata["each_of"]
            if any(v not in allowed for v in value) or len(set(value)) < len(value):
                raise ConfigError(f"{what} {source}: {key}={value!r} is not allowed "
                                  f"(allowed: each of {', '.join(allowed)}, at most once)")
        elif "range" in f.metadata:
            rng, note, many = f.metadata["range"], f.metadata["note"], isinstance(value, list)
            for v in value if many else [value]:
                if not rng.admits(v):
                    shown = f"{key}={value!r}" + (f": item {v!r}" if many else "")
                    why = "out of range" if math.isfinite(v) else "not a finite number"
                    raise ConfigError(f"{what} {source}: {shown} is {why} (allowed: {'each ' if many else ''}"
                                      f"{rng}{'; ' + note if note else ''})")


def _validate(cfg: Config, source: str, files: bool = True) -> None:
    """Each key against its declaration, then what relates keys to each other, then (with
    `files`) that the files the config names exist. `data.root` is left to the data sources,
    whose one-line errors say which file of which dataset is missing and how to get it."""
    check_fields(cfg, source)
    m, t, loss = cfg.meta, cfg.train, cfg.loss
    unknown = [n for n in tracker_names(t.log_with) if n not in TRACKERS]
    checks = [
        (not unknown, "train.log_with", f"{t.log_with!r}: unknown tracker {', '.join(map(repr, unknown))} "
         f"(allowed, comma-separated: {', '.join(TRACKERS)}, or none)"),
        (m.min_width <= m.max_width, "meta.min_width/max_width",
         f"min_width={m.min_width:g} > max_width={m.max_width:g}: need min_width <= max_width"),
        (not m.train_widths or (len(m.train_widths) >= 2 and min(m.train_widths) == m.min_width
                                and max(m.train_widths) == m.max_width),
         "meta.train_widths", f"={m.train_widths}: need >= 2 fractions, the smallest = meta.min_width "
                              f"({m.min_width:g}), the largest = meta.max_width ({m.max_width:g})"),
        (bool(cfg.eval.widths), "eval.widths", "=[]: need at least one fraction in (0, 1]"),
        (cfg.recipe.init != "recon" or cfg.recipe.warmup_steps > 0, "recipe.warmup_steps",
         "=0: init=recon fits the new heads by a warm-up: set recipe.warmup_steps > 0 (e.g. 1000)"),
        (not norm_strategy(m.norm).skipinit or cfg.model.family != "lenet", "meta.norm",
         f"={m.norm}: lenet has no residual blocks for SkipInit: use meta.norm=fold"),
        (cfg.data.dataset != "shards" or cfg.data.train_limit == cfg.data.test_limit == 0,
         "data.train_limit/test_limit", "in-memory datasets only: with shards, list fewer shards instead"),
        (not (t.warmup_steps and t.warmup_fraction), "train.warmup_steps/warmup_fraction",
         f"={t.warmup_steps}/{t.warmup_fraction:g}: set one of them (the other to 0)"),
        (cfg.data.val_fraction + cfg.data.final_fraction < 1, "data.val_fraction/final_fraction",
         f"={cfg.data.val_fraction:g}/{cfg.data.final_fraction:g}: together they must leave training images (< 1)"),
        ("final" not in cfg.eval.splits or cfg.data.final_fraction > 0 or bool(cfg.data.final_shards),
         "eval.splits", f"={cfg.eval.splits}: no final split: set data.final_fraction > 0 (or data.final_shards)"),
        (t.select_every == 0 or cfg.data.dataset == "shards" or cfg.data.val_fraction > 0,
         "train.select_every", f"={t.select_every}: selection scores the held-out split: set data.val_fraction > 0"),
        (loss.ce + loss.kd + loss.recon + loss.inplace_kd > 0, "loss.ce/kd/recon/inplace_kd",
         "all 0: nothing would train the INR (set at least one > 0)"),
        (bool(cfg.run_dir.strip()), "run_dir", "='': name the run's directory, e.g. runs/demo"),
        (not Path(cfg.run_dir).exists() or Path(cfg.run_dir).is_dir(), "run_dir",
         f"={cfg.run_dir}: is a file (a run directory is a folder)"),
    ]
    if files:
        ckpt = cfg.teacher.checkpoint
        checks += [
            (not ckpt or is_remote(ckpt) or Path(ckpt).is_file(), "teacher.checkpoint",
             f"={ckpt}: no such file (a teacher.pt written by stage 0, a zoo state dict, a URL, "
             "torchvision:<Weights>, or '' to train one)"),
            (t.resume in ("auto", "none") or Path(t.resume).is_dir(), "train.resume",
             f"={t.resume}: no such checkpoint directory (allowed: auto, none, or a "
             "stage_<k>/checkpoint_<step> directory)"),
        ]
    for ok, key, why in checks:
        if not ok:
            raise ConfigError(f"config {source}: {key}{'' if why.startswith('=') else ': '}{why}")
    if cfg.model.channels:  # the family builder knows how many entries each family takes
        from .models.registry import build_family
        try:
            build_family(cfg.model.family, cfg.model.width, tuple(cfg.model.channels))
        except ValueError as e:
            why = str(e).removeprefix("model.channels ")
            raise ConfigError(f"config {source}: model.channels={cfg.model.channels}: {why}") from None


def config_text(cfg: Config) -> str:
    """The resolved config as YAML: every key, in declaration order; load_config reads it back."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(config_text(cfg))


