"""`neumeta-dist config CONFIG [key=value …]` and `launch/train.py --print-config`: the user sees
the resolved, validated config — base chain and overrides applied — before anything runs."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from neumeta_dist import cli
from neumeta_dist.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs/demo.yaml")


def test_config_prints_the_resolved_config_with_its_base_and_overrides(capsys, tmp_path):
    cli.main(["config", DEMO, "train.lr=5e-4", "meta.min_width=0.3"])
    text = capsys.readouterr().out
    printed = yaml.safe_load(text)
    assert printed["train"]["lr"] == 5e-4 and printed["meta"]["min_width"] == 0.3  # the overrides
    assert printed["inr"]["hidden"] == 128  # demo.yaml's own key
    assert printed["meta"]["norm"] == "recalib_all"  # from its base, blockwise.yaml
    # the printed text is the config itself: read back, it is the same config
    (tmp_path / "printed.yaml").write_text(text)
    assert load_config(tmp_path / "printed.yaml") == load_config(DEMO, ["train.lr=5e-4", "meta.min_width=0.3"])


def test_config_refuses_an_invalid_override_in_one_line_before_printing(capsys):
    with pytest.raises(SystemExit, match=r"^error: .*train\.max_steps=-5 is out of range"):
        cli.main(["config", DEMO, "train.max_steps=-5"])
    assert capsys.readouterr().out == ""


def test_train_prints_the_config_before_it_starts(capsys, monkeypatch):
    from neumeta_dist.training import pipeline
    started = []
    monkeypatch.setattr(pipeline, "run", lambda cfg, stage, restart_from=None: started.append(capsys.readouterr().out))
    pipeline.main(["--config", DEMO, "--print-config", "train.max_steps=7"])
    assert yaml.safe_load(started[0])["train"]["max_steps"] == 7
