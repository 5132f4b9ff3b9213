"""A run directory knows what made it (records/scopes.py, records/lineage.py): every config key is classified;
a re-run whose config changes a finished artefact's keys stops before any work, in one line;
`--restart-from k` retrains from k on; evaluation-only changes re-evaluate and say so; and
results.json records the digest and commit that made each stage."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import TINY_RUN, TINY_RUN_CONFIG, refused_in_one_line, train_tiny_run

from neumeta_dist.config import Config, load_config
from neumeta_dist.records import scopes
from neumeta_dist.training import pipeline

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / TINY_RUN_CONFIG)


def test_every_config_key_is_classified_exactly_once():
    keys = set(scopes.flat(Config()))
    assert scopes.unclassified(Config()) == []
    assert set(scopes.SCOPE) == keys  # and no classified key that config.py no longer has
    assert sum(len(v) for v in scopes._KEYS.values()) == len(scopes.SCOPE)  # none named twice


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("lineage") / "run")


@pytest.fixture
def run(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def _train(run: Path, *args: str) -> list[str]:
    return ["--config", CONFIG, *TINY_RUN, *args, f"run_dir={run}"]


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_the_teacher_and_every_stage_record_the_digest_of_their_keys_and_the_commit(run):
    cfg = load_config(run / "config.yaml")
    for k, marker in ((0, run / "teacher" / "COMPLETE"), (1, run / "stage_1" / "COMPLETE")):
        made_by = json.loads(marker.read_text())["made_by"]
        assert made_by["keys"] == scopes.keys_of(cfg, k) and made_by["digest"] == scopes.digest(made_by["keys"])
        assert made_by["commit"] not in ("", "unknown")
    assert "train.lr" not in json.loads((run / "teacher" / "COMPLETE").read_text())["made_by"]["keys"]
    results = json.loads((run / "results.json").read_text())
    assert {k: v["digest"] for k, v in results["made_by"].items()} == {
        "0": scopes.digest(scopes.keys_of(cfg, 0)), "1": scopes.digest(scopes.keys_of(cfg, 1))}


def test_a_rerun_that_changes_a_stage_key_stops_before_any_work_naming_keys_values_and_ways_on(run, capsys):
    before = _snapshot(run)
    line = refused_in_one_line(capsys, pipeline.main, _train(run, "train.lr=0.01", "loss.ce=50"))
    for text in ("stage 1", "train.lr: 0.0008 -> 0.01", "loss.ce: 100.0 -> 50", "run_dir=", "--restart-from 1"):
        assert text in line, line
    assert _snapshot(run) == before  # config.yaml and results.json included: nothing was written


def test_a_rerun_that_changes_a_teacher_key_is_refused_without_a_traceback(run, capsys):
    before = _snapshot(run)
    line = refused_in_one_line(capsys, pipeline.main, _train(run, "model.width=0.5"))
    assert "the teacher (stage 0)" in line and "model.width: 0.25 -> 0.5" in line and "--restart-from 0" in line
    assert _snapshot(run) == before


def test_restarting_after_the_stale_stage_is_refused(run, capsys):
    line = refused_in_one_line(capsys, pipeline.main, _train(run, "model.width=0.5", "--restart-from", "1"))
    assert "--restart-from 1 would keep the teacher (stage 0)" in line


def test_a_run_finished_before_records_is_checked_against_its_config_yaml(run, capsys):
    marker = run / "stage_1" / "COMPLETE"
    info = json.loads(marker.read_text())
    info.pop("made_by")
    marker.write_text(json.dumps(info))
    (run / "teacher" / "COMPLETE").unlink()
    line = refused_in_one_line(capsys, pipeline.main, _train(run, "train.lr=0.01"))
    assert "stage 1" in line and "train.lr: 0.0008 -> 0.01" in line


def test_restart_from_retrains_that_stage_on_and_records_what_trained_it(run, capsys):
    teacher = (run / "teacher" / "teacher.pt").read_bytes()
    old_final = (run / "stage_1" / "final.pt").read_bytes()
    pipeline.main(_train(run, "train.lr=0.01", "--restart-from", "1"))
    assert "--restart-from 1: deleted stage_1" in capsys.readouterr().out
    assert (run / "teacher" / "teacher.pt").read_bytes() == teacher  # the teacher's keys did not change
    assert (run / "stage_1" / "final.pt").read_bytes() != old_final
    made_by = json.loads((run / "stage_1" / "COMPLETE").read_text())["made_by"]
    assert made_by["keys"]["train.lr"] == 0.01
    results = json.loads((run / "results.json").read_text())
    assert results["made_by"]["1"]["digest"] == made_by["digest"] and results["config"]["train"]["lr"] == 0.01
    pipeline.main(_train(run, "train.lr=0.01"))  # the same config again: nothing stale, nothing refused


def test_an_evaluation_only_change_reevaluates_and_says_so(run, capsys):
    final = (run / "stage_1" / "final.pt").read_bytes()
    pipeline.main(_train(run, "eval.widths=[0.5,1.0]"))
    out = capsys.readouterr().out
    assert "evaluation settings changed" in out and "eval.widths: [1.0] -> [0.5, 1.0]" in out
    assert (run / "stage_1" / "final.pt").read_bytes() == final
    assert {w["width"] for w in json.loads((run / "results.json").read_text())["widths"]} >= {0.5, 1.0}


def test_submitting_a_chain_with_a_stale_config_is_refused_before_anything_is_submitted(run, capsys):
    from neumeta_dist.cluster import submit
    line = refused_in_one_line(capsys, submit.main, ["--config", CONFIG, "--profile", str(ROOT / "slurm/local.yaml"),
                                                     *TINY_RUN, "train.lr=0.01", f"run_dir={run}"])
    assert "stage 1" in line and "train.lr: 0.0008 -> 0.01" in line and "--restart-from 1" in line
    assert not (run / "slurm").exists()
