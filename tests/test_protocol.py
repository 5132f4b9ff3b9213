"""neumeta_dist.evaluation.protocol: the evidence protocol's table — per-seed pairing, Student-t intervals
and the declared endpoints' verdicts — from JSONs laid out as launch/protocol_seed.sh keeps them."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from neumeta_dist.evaluation.protocol import Interval, Seeds, endpoints, once_table, t975

WIDTHS = {0.25: "outside", 0.5: "trained", 0.625: "held_out", 0.75: "trained", 1.0: "trained"}


def _write(root, seed: int, row: str, acc: dict[float, float], teacher: float = 0.93, final_shift: float = 0.0):
    """One row's JSON: test accuracy `acc`, the final split `acc` + `final_shift`."""
    widths = [{"width": w, "kind": WIDTHS[w], "accuracy": a,
               "by_split": {"val": a, "final": a + final_shift, "test": a}} for w, a in sorted(acc.items())]
    folder = root / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{row}.json").write_text(json.dumps(
        {"teacher": {"accuracy": teacher, "by_split": {"val": teacher, "final": teacher, "test": teacher}},
         "widths": widths}))


def test_the_interval_is_students_t_over_the_paired_seed_differences():
    iv = Interval.of([0.01, 0.02, 0.03])
    assert iv.mean == pytest.approx(0.02) and iv.half == pytest.approx(4.303 * 0.01 / math.sqrt(3))
    assert iv.verdict() == "level"  # [-0.48, +4.48] points contains 0
    assert Interval.of([0.010, 0.011, 0.012]).verdict() == "above"
    assert Interval.of([-0.010, -0.011, -0.012]).verdict() == "below"
    assert Interval.of([0.5]).verdict() == "one seed" and Interval.of([]) is None
    assert t975(4) == 2.776


def test_differences_pair_each_seed_with_itself_and_skip_seeds_missing_a_row(tmp_path):
    # the slimmable network is better by exactly 1 point at every seed, whatever the seed's level
    for seed, level in enumerate([0.80, 0.90, 0.85]):
        _write(tmp_path, seed, "one_stage", {w: level + 0.01 for w in WIDTHS})
        _write(tmp_path, seed, "slimmable", {w: level for w in WIDTHS})
    _write(tmp_path, 3, "one_stage", {w: 0.5 for w in WIDTHS})  # a seed still running: no slimmable row yet
    seeds = Seeds(tmp_path, "test")
    iv = seeds.paired(lambda s: seeds.acc("one_stage", s, 0.5), lambda s: seeds.acc("slimmable", s, 0.5))
    # unpaired, the seeds' levels (sd 5 points) would swamp the 1-point difference
    assert iv.n == 3 and iv.mean == pytest.approx(0.01) and iv.half == pytest.approx(0, abs=1e-12)
    assert iv.verdict() == "above"


def test_endpoints_read_the_final_split_and_give_their_verdicts(tmp_path):
    for seed in range(3):
        _write(tmp_path, seed, "one_stage", {0.25: 0.80, 0.5: 0.915, 0.625: 0.92, 0.75: 0.925, 1.0: 0.93},
               final_shift=-0.002 * seed)
        _write(tmp_path, seed, "slimmable", {0.25: 0.70, 0.5: 0.910, 0.625: 0.90, 0.75: 0.921, 1.0: 0.93},
               final_shift=-0.002 * seed)  # the seed moves both rows: pairing takes it out
        _write(tmp_path, seed, "blockwise", {w: 0.90 for w in WIDTHS})
        # two ends: 0.75 sags 1.5 points under the straight line from 0.5 to 1.0, 0.625 sits on it
        _write(tmp_path, seed, "two_ends", {0.25: 0.7, 0.5: 0.90, 0.625: 0.905, 0.75: 0.895, 1.0: 0.92})
        (tmp_path / f"seed{seed}" / "individual_0.25.json").write_text(json.dumps(
            {"widths": [{"width": 0.25, "accuracy": 0.9, "by_split": {"final": 0.9, "test": 0.9}}]}))
    got = {(pid, what): (iv, verdict) for pid, what, iv, _, verdict in endpoints(Seeds(tmp_path, "final"))}
    iv, verdict = got[("P1", "one_stage − teacher at w=0.75")]
    assert iv.mean == pytest.approx(0.925 - 0.002 - 0.93) and verdict == "met"  # the final split's figures
    assert got[("P3", "one_stage − slimmable, w=1")][1] == "level"
    assert got[("P3", "one_stage − slimmable, w=0.5")][1] == "above"
    assert got[("P3", "verdict")][1] == "met"  # above at 0.5 and 0.75 and at the held-out mean, level at 1.0
    assert got[("P3", "one_stage − slimmable, held-out mean")][1] == "above"
    assert got[("P4", "one_stage − individual at w=0.25")][1] == "missed"  # 10 points under
    assert got[("P5", "blockwise − one_stage, mean over trained widths")][1] == "below: recommend one stage"
    assert got[("P6", "two_ends at w=0.75 − line(0.5, 1.0)")][1] == "missed"
    assert got[("P6", "two_ends at w=0.625 − line(0.5, 1.0)")][1] == "met"


def test_report_protocol_writes_the_page_and_its_plot(tmp_path):
    for seed in range(2):
        _write(tmp_path / "results", seed, "one_stage", {w: 0.9 + 0.001 * seed for w in WIDTHS})
    out = tmp_path / "page" / "results.md"
    done = subprocess.run([sys.executable, "-m", "neumeta_dist.cli", "report", "--protocol", str(tmp_path / "results"),
                           "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "Split: **final**" in text and "| one_stage (0,1) | 0.9005 ± 0.0007 |" in text
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_once_rows_are_tabled_on_the_asked_split_with_the_inr_storage_beside_them(tmp_path):
    once = tmp_path / "once"
    once.mkdir()
    (once / "neumeta.json").write_text(json.dumps({"storage": {"inr": 1000, "fixed": 234, "alphas": 0, "total": 1234},
        "widths": [{"width": 0.5, "accuracy": 0.7, "by_split": {"val": 0.71, "final": 0.72, "test": 0.7}}]}))
    (once / "individual_0.5_0.75.json").write_text(json.dumps(
        {"widths": [{"width": 0.75, "accuracy": 0.9, "by_split": {"final": 0.91}}]}))
    text = once_table(tmp_path, "final", {0.5: "trained", 0.75: "trained"})
    assert "| neumeta | 0.7200 | – | 1,234 (1,000 INR) |" in text
    assert "| individual_0.5_0.75 | – | 0.9100 | – |" in text
    assert once_table(tmp_path / "nothing", "final", {0.5: "trained"}) == ""


def test_a_protocol_row_keeps_its_json_once_skips_it_after_and_keeps_nothing_when_it_fails(tmp_path):
    """launch/protocol_rows.sh's rule, which both the seed and the once scripts follow."""
    root = Path(__file__).resolve().parents[1]
    script = f"""
set -euo pipefail
cd {root}
ROOT={root} PY={sys.executable} OUT={tmp_path}/out R={tmp_path}/r LABEL="seed 7" LOG=x_
mkdir -p $OUT $R/logs
source launch/protocol_rows.sh
row good $R/made.json bash -c 'echo {{\\"widths\\": []}} > {tmp_path}/r/made.json'
row good $R/made.json false
row bad $R/never.json bash -c 'echo boom; exit 3' || echo "status $?"
"""
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("seed 7 good: done in") and lines[1] == f"seed 7 good: in {tmp_path}/out, skipped"
    assert lines[2] == f"seed 7 bad: FAILED (see {tmp_path}/r/logs/x_bad.log)" and lines[3] == "status 1"
    assert json.loads((tmp_path / "out/good.json").read_text()) == {"widths": []}
    assert not (tmp_path / "out/bad.json").exists() and "boom" in (tmp_path / "r/logs/x_bad.log").read_text()
    assert (tmp_path / "r/times.tsv").read_text().startswith("x_good\t")
