"""evaluation/accuracy.py, evaluation/sweep.py, evaluation/results.py: accuracy, merged networks, the width sweep and its written outputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_net
from torch.utils.data import TensorDataset

from neumeta_dist.evaluation.accuracy import accuracy
from neumeta_dist.evaluation.results import results_table, write_results
from neumeta_dist.evaluation.sweep import merged_weights, sweep
from neumeta_dist.models.family import parameter_count

pytestmark = pytest.mark.usefixtures("one_thread")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _data(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g))


def _results(net, data, widths=(0.25, 0.5, 1.0)):
    """What the pipeline writes: the teacher line, a sweep, and the run's description."""
    rows = sweep(net, list(widths), data, batch_size=8, samples=1, describe=lambda w: {"seen": w >= 0.5})
    return {"teacher": {"accuracy": 0.5, "params": parameter_count(net.family, net.family.full_sizes())},
            "widths": rows, "dataset": "synthetic", "model": net.family.name, "recipe": "full",
            "stages_completed": 1, "generated_layers": net.generated_names()}


# --- accuracy ------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [1, 7, 30, 100])
def test_accuracy_equals_the_direct_count_for_any_batch_size(batch_size):
    data = _data(30)
    x, y = data.tensors
    w = torch.randn(16 * 16, 10, generator=torch.Generator().manual_seed(1))
    classify = lambda xb: xb.flatten(1) @ w
    direct = (classify(x).argmax(1) == y).float().mean().item()
    assert accuracy(classify, data, batch_size) == pytest.approx(direct)


def test_accuracy_of_an_oracle_is_one_and_of_an_always_wrong_classifier_is_zero():
    data = _data(20)
    x, y = data.tensors
    lookup = {tuple(xi.flatten()[:4].tolist()): int(yi) for xi, yi in zip(x, y)}
    oracle = lambda xb: torch.nn.functional.one_hot(
        torch.tensor([lookup[tuple(xi.flatten()[:4].tolist())] for xi in xb]), 10).float()
    wrong = lambda xb: -oracle(xb)
    assert accuracy(oracle, data, 6) == 1.0
    assert accuracy(wrong, data, 6) == 0.0


# --- merged networks -------------------------------------------------------------------------

def test_merged_weights_with_one_sample_is_the_noise_free_network(tiny_resnet20):
    net = make_net(tiny_resnet20)
    net.eval()
    clean = net.generate(0.5)
    net.train()  # whatever mode it was in, one sample means no coordinate noise
    merged = merged_weights(net, 0.5, samples=1, noise=1.0)
    assert set(merged) == set(clean)
    assert all(torch.equal(merged[n], clean[n]) for n in clean)


def test_merged_weights_of_several_samples_are_seeded_noisy_averages(tiny_resnet20):
    net = make_net(tiny_resnet20).eval()
    clean = net.generate(0.5)
    a = merged_weights(net, 0.5, samples=3, noise=1.0, seed=0)
    b = merged_weights(net, 0.5, samples=3, noise=1.0, seed=0)
    c = merged_weights(net, 0.5, samples=3, noise=1.0, seed=1)
    assert {n: t.shape for n, t in a.items()} == {n: t.shape for n, t in clean.items()}
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)
    assert any(not torch.allclose(a[n], clean[n]) for n in a)
    # the K-sample mean depends on K: it averages K noisy generations
    two = merged_weights(net, 0.5, samples=2, noise=1.0, seed=0)
    assert any(not torch.allclose(two[n], a[n]) for n in a)


# --- the sweep ---------------------------------------------------------------------------------

def test_sweep_rows_follow_the_widths_and_the_network(tiny_resnet20):
    net = make_net(tiny_resnet20)
    data = _data(20)
    rows = sweep(net, [1.0, 0.25, 0.5], data, batch_size=8, samples=1, describe=lambda w: {"seen": w >= 0.5})
    assert [r["width"] for r in rows] == [0.25, 0.5, 1.0]
    full = parameter_count(tiny_resnet20, tiny_resnet20.full_sizes())
    for r in rows:
        assert r["params"] == net.params_at(r["width"])
        assert r["compression"] == pytest.approx(1 - r["params"] / full)
        assert r["seen"] == (r["width"] >= 0.5)
        weights = net.generate(r["width"])
        direct = accuracy(lambda x: net(x, r["width"], weights=weights)[0], data, 8)
        assert r["accuracy"] == pytest.approx(direct)
    assert rows[-1]["compression"] == 0.0
    assert rows[0]["params"] < rows[1]["params"] < rows[2]["params"]


# --- written outputs ---------------------------------------------------------------------------

def test_write_results_writes_json_of_the_documented_schema_markdown_table_and_png(tmp_path, tiny_resnet20):
    net = make_net(tiny_resnet20)
    results = _results(net, _data(20))
    run_dir = tmp_path / "run"
    write_results(run_dir, results)

    r = json.loads((run_dir / "results.json").read_text())
    assert r == json.loads(json.dumps(results))
    assert isinstance(r["teacher"]["accuracy"], float) and isinstance(r["teacher"]["params"], int)
    for key, kind in (("dataset", str), ("model", str), ("recipe", str), ("stages_completed", int)):
        assert isinstance(r[key], kind), key
    assert r["generated_layers"] and all(isinstance(n, str) for n in r["generated_layers"])
    assert len(r["widths"]) == 3
    for row in r["widths"]:
        assert isinstance(row["width"], (int, float))
        assert isinstance(row["seen"], bool)
        assert isinstance(row["params"], int)
        assert isinstance(row["compression"], float)
        assert isinstance(row["accuracy"], float) and 0.0 <= row["accuracy"] <= 1.0

    md = (run_dir / "results.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(r["widths"])  # header, rule, one row per width
    for row, line in zip(r["widths"], table[2:]):
        assert f"{row['width']:.3f}" in line and f"{row['accuracy']:.4f}" in line
        assert f"{row['params']:,}" in line
    assert md == results_table(results)

    png = (run_dir / "accuracy_vs_compression.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 1000
    assert not (run_dir / "accuracy_vs_macs.png").exists()  # this sweep was given no image size


def test_a_sweep_given_the_image_size_records_macs_and_plots_against_them(tmp_path, tiny_resnet20):
    from neumeta_dist.evaluation.budget import WidthCost
    net = make_net(tiny_resnet20)
    rows = sweep(net, [0.5, 1.0], _data(8), batch_size=8, samples=1, describe=lambda w: {"seen": True},
                 image_size=16)
    cost = WidthCost.of(net, 16)
    assert [r["macs"] for r in rows] == [cost.macs(0.5), cost.macs(1.0)]
    results = {**_results(net, _data(8)), "widths": rows}
    write_results(tmp_path, results)
    assert (tmp_path / "accuracy_vs_macs.png").read_bytes()[:8] == PNG_MAGIC
    line = next(l for l in results_table(results).splitlines() if l.startswith("| 0.500"))
    assert f"| {rows[0]['params']:,} | {cost.macs(0.5) / 1e3:.3g} k |" in line


DOCUMENTED = ("teacher", "widths", "dataset", "model", "recipe", "stages_completed", "generated_layers")
DOCUMENTED_ROW = ("width", "seen", "params", "compression", "accuracy")


def _committed_results() -> list[Path]:
    """Committed evidence of metamorphic runs (the individual baseline has a schema of its own)."""
    found = sorted(p for p in (Path(__file__).resolve().parents[1] / "docs" / "results").glob("*.json")
                   if "teacher" in json.loads(p.read_text()))
    assert found, "no committed results.json evidence under docs/results"
    return found


@pytest.mark.parametrize("path", _committed_results(), ids=lambda p: p.stem)
def test_results_table_renders_a_results_json_with_only_the_documented_keys(path):
    """Committed evidence (docs/results/*.json) carries the schema of architecture.md, and the
    table renders from those keys alone."""
    full = json.loads(path.read_text())
    results = {k: full[k] for k in DOCUMENTED}
    results["widths"] = [{k: row[k] for k in DOCUMENTED_ROW} for row in full["widths"]]
    table = results_table(results)
    for row in results["widths"]:
        assert f"| {row['width']:.3f} |" in table and f"{row['accuracy']:.4f}" in table
        assert f"{row['params']:,} | – |" in table  # no MACs recorded then: a dash
    assert f"{results['teacher']['params']:,} parameters" in table
