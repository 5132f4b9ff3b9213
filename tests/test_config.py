"""neumeta_dist.config: YAML + `base:` inheritance + dotted overrides, validated with clear errors."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from neumeta_dist.config import Config, ConfigError, _read_yaml_chain, load_config

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _leaves(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _get(cfg, dotted):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("path", sorted(DEMO.parent.glob("*.yaml")) + sorted(DEMO.parent.glob("ablations/*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_config_loads_and_holds_the_values_its_file_sets(path):
    raw = yaml.safe_load(path.read_text())
    cfg = load_config(path, files=False)  # the ablations name the teacher a full run writes first
    assert isinstance(cfg, Config)
    raw.pop("base", None)  # the file's own values win over anything it inherits
    for key, value in _leaves(raw):
        got = _get(cfg, key)
        if isinstance(got, float):
            assert got == pytest.approx(float(value)), key
        else:
            assert got == value, key


def test_demo_config_keeps_defaults_for_what_it_does_not_set():
    raw = _read_yaml_chain(DEMO)  # the demo and its base chain
    cfg, default = load_config(DEMO), Config()
    unset = [f"{s}.{f.name}" for s in ("data", "model", "loss", "train", "eval")
             for f in dataclasses.fields(getattr(default, s)) if f.name not in (raw.get(s) or {})]
    assert unset
    for key in unset:
        assert _get(cfg, key) == _get(default, key), key


def test_no_file_gives_the_defaults():
    assert load_config(None).to_dict() == Config().to_dict()


def test_unknown_config_key_is_an_error_naming_the_dotted_key(tmp_path):
    path = _write(tmp_path / "x.yaml", "train:\n  lr: 0.01\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"train\.learning_rat"):
        load_config(path)


def test_unknown_top_level_section_is_an_error_naming_it(tmp_path):
    path = _write(tmp_path / "x.yaml", "trian:\n  lr: 0.01\n")
    with pytest.raises(ConfigError, match="trian"):
        load_config(path)


def test_unknown_key_in_an_override_is_an_error_naming_the_dotted_key():
    with pytest.raises(ConfigError, match=r"inr\.hiden"):
        load_config(DEMO, ["inr.hiden=32"])


def test_bad_choice_value_is_an_error_listing_the_allowed_values():
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, ["model.family=resnet1000"])
    msg = str(err.value)
    assert "model.family" in msg and "resnet1000" in msg
    for allowed in ("resnet20", "resnet56", "resnet18", "resnet50"):
        assert allowed in msg


@pytest.mark.parametrize("override, key", [
    ("data.batch_size=abc", "data.batch_size"),      # str for int
    ("data.batch_size=2.5", "data.batch_size"),      # float for int
    ("train.lr=fast", "train.lr"),                   # str that is no float
    ("smoothing.enabled=[1]", "smoothing.enabled"),  # list for bool
    ("eval.widths=0.5", "eval.widths"),              # scalar for list
    ("model.family=3", "model.family"),              # int for str
])
def test_wrong_type_is_an_error_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(DEMO, [override])


def test_section_given_a_scalar_is_an_error(tmp_path):
    path = _write(tmp_path / "x.yaml", "data: 3\n")
    with pytest.raises(ConfigError, match="data"):
        load_config(path)


def test_dotted_overrides_apply_over_the_file():
    cfg = load_config(DEMO, ["train.lr=0.05", "inr.hidden=32", "model.channels=[4,8,12]",
                             "meta.generated=last_block", "smoothing.enabled=false", "run_dir=/tmp/elsewhere"])
    assert cfg.train.lr == pytest.approx(0.05)
    assert cfg.inr.hidden == 32
    assert cfg.model.channels == [4, 8, 12]
    assert cfg.meta.generated == "last_block"
    assert cfg.smoothing.enabled is False
    assert cfg.run_dir == "/tmp/elsewhere"


def test_later_override_of_the_same_key_wins():
    assert load_config(DEMO, ["inr.hidden=32", "inr.hidden=48"]).inr.hidden == 48


@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("5E-4", 5e-4), ("2e2", 200.0), ("3", 3.0)])
def test_float_overrides_accept_exponent_notation_that_yaml_reads_as_a_string(text, value):
    cfg = load_config(DEMO, [f"train.lr={text}"])
    assert isinstance(cfg.train.lr, float)
    assert cfg.train.lr == pytest.approx(value)


def test_float_list_accepts_exponent_notation():
    cfg = load_config(DEMO, ["eval.widths=[5e-1, 1e0, 0.25]"])
    assert cfg.eval.widths == pytest.approx([0.5, 1.0, 0.25])
    assert all(isinstance(w, float) for w in cfg.eval.widths)


def test_float_in_a_yaml_file_accepts_exponent_notation(tmp_path):
    path = _write(tmp_path / "x.yaml", "train:\n  lr: 3e-4\nloss:\n  reg: 1e-5\n")
    cfg = load_config(path)
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.loss.reg == pytest.approx(1e-5)


@pytest.mark.parametrize("bad", ["train.lr", "=3", "train.lr 0.1"])
def test_malformed_override_is_an_error_quoting_it(bad):
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, [bad])
    assert repr(bad) in str(err.value) or bad in str(err.value)


def test_base_inheritance_merges_sections_and_the_child_overrides(tmp_path):
    _write(tmp_path / "base.yaml", "run_dir: runs/base\ntrain:\n  lr: 0.01\n  seed: 7\ninr:\n  hidden: 32\n")
    child = _write(tmp_path / "child.yaml", "base: base.yaml\ntrain:\n  lr: 0.02\nmodel:\n  width: 0.25\n")
    cfg = load_config(child)
    assert cfg.train.lr == pytest.approx(0.02)   # the child wins
    assert cfg.train.seed == 7                   # the base's sibling key survives the merge
    assert cfg.inr.hidden == 32                  # a section only the base sets
    assert cfg.model.width == 0.25               # a section only the child sets
    assert cfg.run_dir == "runs/base"


def test_base_chain_of_three_files_resolves_relative_to_each_file(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "root.yaml", "inr:\n  hidden: 8\n  layers: 1\n")
    _write(tmp_path / "sub" / "mid.yaml", "base: ../root.yaml\ninr:\n  layers: 2\n")
    leaf = _write(tmp_path / "sub" / "leaf.yaml", "base: mid.yaml\ninr:\n  num_freqs: 4\n")
    cfg = load_config(leaf)
    assert (cfg.inr.hidden, cfg.inr.layers, cfg.inr.num_freqs) == (8, 2, 4)


def test_overrides_apply_after_base_inheritance(tmp_path):
    _write(tmp_path / "base.yaml", "train:\n  lr: 0.01\n")
    child = _write(tmp_path / "child.yaml", "base: base.yaml\n")
    assert load_config(child, ["train.lr=1e-4"]).train.lr == pytest.approx(1e-4)


def test_base_chain_loop_is_an_error(tmp_path):
    _write(tmp_path / "a.yaml", "base: b.yaml\n")
    _write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="loop"):
        load_config(tmp_path / "a.yaml")


def test_base_pointing_at_itself_is_an_error(tmp_path):
    _write(tmp_path / "a.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError):
        load_config(tmp_path / "a.yaml")


def test_missing_config_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(missing)


def test_missing_base_file_is_an_error_naming_it(tmp_path):
    child = _write(tmp_path / "child.yaml", "base: gone.yaml\n")
    with pytest.raises(ConfigError, match="gone.yaml"):
        load_config(child)


def test_invalid_yaml_is_a_config_error_naming_the_file(tmp_path):
    path = _write(tmp_path / "broken.yaml", "train: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(path)


@pytest.mark.parametrize("overrides, key", [
    (["meta.min_width=0.9", "meta.max_width=0.5"], "min_width"),
    (["meta.min_width=0"], "min_width"),
    (["meta.max_width=1.5"], "max_width"),
    (["eval.widths=[]"], "eval.widths"),
    (["eval.widths=[0.5, 1.2]"], "eval.widths"),
    (["train.widths_per_step=0"], "widths_per_step"),
    (["data.val_fraction=1.0"], "val_fraction"),
    (["train.ema_decay=1.0"], "ema_decay"),
    (["eval.samples=0"], "eval.samples"),
    (["model.width=0"], "model.width"),
    (["train.warmup_fraction=1.0"], "warmup_fraction"),
    (["train.warmup_steps=10"], "warmup_steps/warmup_fraction"),  # demo.yaml sets the fraction: one or the other
    (["train.select_every=-1"], "select_every"),
    (["train.select_every=5", "data.val_fraction=0"], "select_every"),
])
def test_out_of_range_values_are_errors_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(DEMO, overrides)


def test_digest_ignores_run_dir_but_not_training_settings():
    a = load_config(DEMO)
    assert a.digest() == load_config(DEMO, ["run_dir=/somewhere/else"]).digest()
    assert a.digest() != load_config(DEMO, ["train.lr=0.5"]).digest()


def test_lr_warm_up_as_a_fraction_scales_with_the_stage_and_steps_override_it():
    from neumeta_dist.training.loop import lr_lambda
    cfg = load_config(DEMO, ["train.warmup_fraction=0.4", "train.schedule=constant"])
    f = lr_lambda(cfg, 300)
    assert [f(0), f(59), f(119), f(120), f(299)] == [1 / 120, 0.5, 1.0, 1.0, 1.0]
    f = lr_lambda(load_config(DEMO, ["train.warmup_fraction=0", "train.warmup_steps=10"]), 300)
    assert [f(0), f(9), f(10)] == [0.1, 1.0, 1.0]


def test_an_empty_string_key_is_the_empty_string_in_an_override_and_in_a_file(tmp_path):
    """`teacher.checkpoint=` is how the GPU configs' headers say "train a teacher instead"."""
    assert load_config(None, ["teacher.checkpoint=torchvision:X", "teacher.checkpoint="]).teacher.checkpoint == ""
    path = tmp_path / "c.yaml"
    path.write_text("teacher:\n  checkpoint:\n")
    assert load_config(path).teacher.checkpoint == ""
    with pytest.raises(ConfigError, match="model.width must be float"):
        load_config(None, ["model.width="])
