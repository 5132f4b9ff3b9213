"""neumeta_dist.baselines.individual: one network per width with the teacher's recipe, parameter counts
matching the metamorphic network's, provenance per width, and a sweep that resumes."""
from __future__ import annotations

import json

import pytest

from neumeta_dist.baselines.individual import train_individual
from neumeta_dist.config import load_config
from neumeta_dist.models.family import parameter_count
from neumeta_dist.recipe.stages import generated_layers, metamorphic_groups
from neumeta_dist.training.context import RunContext

pytestmark = pytest.mark.usefixtures("one_thread")


def test_widths_are_trained_once_with_matching_parameters_and_provenance(tmp_path):
    cfg = load_config(None, ["data.dataset=synthetic", "data.train_limit=256", "data.test_limit=128",
                             "data.batch_size=64", "model.width=0.25", "teacher.epochs=1",
                             "meta.generated=authors", f"run_dir={tmp_path}"])
    rows = train_individual(cfg, [0.5])
    family = RunContext.load(cfg).family
    groups = metamorphic_groups(family, generated_layers(family, "authors"), "inner")
    assert [r["width"] for r in rows] == [0.5]
    assert rows[0]["params"] == parameter_count(family, family.sizes(0.5, groups))
    assert len(rows[0]["commit"].split("+")[0]) == 40 and rows[0]["wall_s"] > 0
    saved = json.loads((tmp_path / "individual.json").read_text())
    assert saved["widths"] == rows and saved["config"]["teacher"]["epochs"] == 1
    again = train_individual(cfg, [0.5])  # already trained: kept, not retrained
    assert again == rows
