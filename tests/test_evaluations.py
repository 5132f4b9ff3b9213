"""Results only grow (records/evaluations.py): each evaluation is a file of its own and results.json,
results.md and the plots are the merged view of all of them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import TINY_RUN, TINY_RUN_CONFIG, train_tiny_run

from neumeta_dist import cli
from neumeta_dist.training import pipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("evaluations") / "run", "eval.widths=[0.5,0.75,1.0]")


@pytest.fixture
def run(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def _view(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def _evaluations(run: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run / "evaluations").glob("*.json"))]


def test_evaluating_one_width_keeps_every_earlier_width(run, monkeypatch):
    argv = ["eval", "--run", str(run), "--widths", "0.6"]
    monkeypatch.setattr("sys.argv", ["neumeta-dist", *argv])  # the command line its file records
    cli.main(argv)
    assert [w["width"] for w in _view(run)["widths"]] == [0.5, 0.6, 0.75, 1.0]
    first, second = _evaluations(run)
    assert [w["width"] for w in first["widths"]] == [0.5, 0.75, 1.0]  # the training's, untouched
    assert [w["width"] for w in second["widths"]] == [0.6] and second["command"] == "neumeta-dist " + " ".join(argv)
    assert second["commit"] and second["evaluation"] == first["evaluation"]
    table = (run / "results.md").read_text()
    assert all(f"| {w:.3f} |" in table for w in (0.5, 0.6, 0.75, 1.0))
    assert [e["widths"] for e in _view(run)["evaluations"]] == [[0.5, 0.75, 1.0], [0.6]]


def test_a_width_evaluated_two_ways_keeps_both_and_says_which(run):
    trained_with = _evaluations(run)[0]["evaluation"]["samples"]
    other = trained_with + 1
    cli.main(["eval", "--run", str(run), "--widths", "1.0", "--samples", str(other)])
    cli.main(["eval", "--run", str(run), "--widths", "1.0", "--samples", str(other)])  # the same way again: replaces
    at_one = [w for w in _view(run)["widths"] if w["width"] == 1.0]
    assert sorted(w["evaluation"]["samples"] for w in at_one) == [trained_with, other]
    assert len(_evaluations(run)) == 3


def test_a_results_json_from_before_evaluation_files_is_kept(run):
    shutil.rmtree(run / "evaluations")
    cli.main(["eval", "--run", str(run), "--widths", "0.6"])
    assert [w["width"] for w in _view(run)["widths"]] == [0.5, 0.6, 0.75, 1.0]


def test_evaluations_of_a_retrained_stage_leave_the_view_but_not_the_disk(run):
    pipeline.main(["--config", str(ROOT / TINY_RUN_CONFIG), *TINY_RUN, "eval.widths=[1.0]", "train.lr=0.01",
                   "--restart-from", "1", f"run_dir={run}"])
    view = _view(run)
    assert [w["width"] for w in view["widths"]] == [1.0]  # the old network's 0.5 and 0.75 are not this one's
    assert [e.get("superseded", False) for e in view["evaluations"]] == [True, False]
    assert len(_evaluations(run)) == 2
