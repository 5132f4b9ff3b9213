"""What a width costs (neumeta_dist/evaluation/budget.py, MACs in models/family.py) and the widest width
within a budget — down to `neumeta-dist export --max-params/--max-macs` on a trained run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import make_net
from test_zoo import CifarResNet, _randomised
from torch.utils.flop_counter import FlopCounterMode

from neumeta_dist.evaluation.budget import STEP, WidthCost
from neumeta_dist.evaluation.export import load_exported, materialise
from neumeta_dist.models.family import layer_areas, mac_count
from neumeta_dist.models.registry import build_family

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def _counted_macs(model, x) -> int:
    """torch's own FLOP counter (2 FLOPs per multiply-accumulate of convs and matmuls)."""
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name, published", [("resnet18", 1.81e9), ("resnet50", 4.09e9)])
def test_macs_of_the_torchvision_resnets_are_torchs_count_and_the_published_figure(name, published):
    family = build_family(name, num_classes=1000)
    ours = mac_count(family, family.full_sizes(), layer_areas(family, 224))
    with torch.device("meta"):  # counted on shapes alone: no memory, no arithmetic
        counted = _counted_macs(getattr(torchvision.models, name)(weights=None), torch.empty(1, 3, 224, 224))
    assert ours == counted
    assert ours == pytest.approx(published, rel=5e-3)  # torchvision's model card ("GFLOPS")


@pytest.mark.parametrize("width", [1.0, 0.5, 0.3])
def test_cost_at_a_width_is_that_of_the_exported_network(tiny_resnet20, width):
    net = make_net(tiny_resnet20).eval()
    plain = materialise(net, net.generate(width))
    cost = WidthCost.of(net, 16)
    assert cost.params(width) == sum(p.numel() for p in plain.parameters()) == net.params_at(width)
    assert cost.macs(width) == _counted_macs(plain, torch.randn(1, 1, 16, 16))


def test_the_widest_width_within_a_budget_is_the_last_that_fits(tiny_resnet20):
    cost = WidthCost.of(make_net(tiny_resnet20), 16)
    for kind in ("params", "macs"):
        measure = getattr(cost, kind)
        budget = measure(0.6)
        w = cost.widest(**{f"max_{kind}": budget})
        assert w >= 0.6 and measure(w) <= budget < measure(round(w + STEP, 6))
        assert cost.same_network(w)[0] <= 0.6  # 0.6 is on its plateau: the same network
    both = cost.widest(max_params=cost.params(0.9), max_macs=cost.macs(0.5))
    assert cost.sizes(both) == cost.sizes(0.5)  # the tighter budget decides
    assert cost.widest(max_params=10**9) == 1.0


def test_a_budget_below_the_narrowest_network_is_refused_with_its_cost(tiny_resnet20):
    cost = WidthCost.of(make_net(tiny_resnet20), 16)
    with pytest.raises(ValueError, match=rf"no width fits the budget of 1,000 parameters: the narrowest, "
                                         rf"0.001, has {cost.params(0.001):,} parameters"):
        cost.widest(max_params=1000)


def test_describe_reports_the_accuracy_of_an_evaluated_width_of_the_same_network(tiny_resnet20):
    cost = WidthCost.of(make_net(tiny_resnet20), 16)
    results = {"stages_completed": 2, "widths": [{"width": 0.5, "accuracy": 0.91}, {"width": 1.0, "accuracy": 0.93}]}
    lo, hi = cost.same_network(0.5)
    line = cost.describe(hi, "trained", results, stage=2)
    assert line.startswith(f"width {hi:g} (trained, the same network for widths {lo:g}–{hi:g}): "
                           f"{cost.params(0.5):,} parameters")
    assert "MACs per 16×16 image" in line and line.endswith("accuracy 0.9100 (results.json, width 0.5)")
    assert "not evaluated at this width (results.json, nearest: 0.5 → 0.9100, 1 → 0.9300)" in \
        cost.describe(0.75, "", results, stage=2)
    assert "results.json is of stage 2, this network of stage 1" in cost.describe(0.5, "", results, stage=1)
    assert "no results.json" in cost.describe(0.5)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The smallest real run: a zoo teacher (no teacher training), every block in one 2-step stage,
    evaluated at 0.5/0.75/1.0 by the pipeline itself."""
    root = tmp_path_factory.mktemp("budget")
    torch.save(_randomised(CifarResNet(3, channels=(4, 8, 16), in_channels=1)).state_dict(), root / "zoo.pth")
    args = ["data.dataset=synthetic", "data.train_limit=256", "data.test_limit=128", "model.width=0.25",
            f"teacher.checkpoint={root / 'zoo.pth'}", "smoothing.two_opt_rounds=2", "recipe.incremental=false",
            "recipe.warmup_steps=0", "train.max_steps=2", "train.widths_per_step=2", "inr.hidden=16",
            "inr.layers=1", "inr.num_freqs=4", "eval.widths=[0.5,0.75,1.0]", "eval.calib_samples=64"]
    env = {**os.environ, "NEUMETA_NO_BAR": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "launch/train.py"), "--config", str(ROOT / "configs/blockwise.yaml"),
                          *args, f"run_dir={root / 'run'}"], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return root / "run"


def _export(capsys, *args: str) -> str:
    from neumeta_dist.cli import main
    main(["export", *args])
    return capsys.readouterr().out


def test_eval_records_macs_per_width_and_plots_accuracy_against_them(run):
    r = json.loads((run / "results.json").read_text())
    macs = [w["macs"] for w in r["widths"]]
    assert macs == sorted(macs) and len(set(macs)) == 3
    assert "| MACs |" in (run / "results.md").read_text()
    assert (run / "accuracy_vs_macs.png").read_bytes()[:4] == b"\x89PNG"


def test_export_within_a_parameter_budget_picks_the_widest_fitting_width_and_its_accuracy(run, tmp_path, capsys):
    r = json.loads((run / "results.json").read_text())
    row = next(w for w in r["widths"] if w["width"] == 0.75)
    out = _export(capsys, "--run", str(run), "--max-params", str(row["params"]), "--format", "onnx",
                  "--out", str(tmp_path / "net.onnx"))
    assert f"{row['params']:,} parameters, " in out and f"accuracy {row['accuracy']:.4f} (results.json, width 0.75)" in out
    assert "onnxruntime.InferenceSession" in out
    import onnxruntime
    session = onnxruntime.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(["logits"], {"images": torch.randn(4, 1, 16, 16).numpy()})[0].shape == (4, 10)


def test_export_within_a_mac_budget_writes_a_network_that_fits(run, tmp_path, capsys):
    r = json.loads((run / "results.json").read_text())
    budget = r["widths"][0]["macs"] + 1  # width 0.5's MACs: the widest network within them is 0.5's
    out = _export(capsys, "--run", str(run), "--max-macs", str(budget), "--out", str(tmp_path / "net.pt"))
    plain = load_exported(tmp_path / "net.pt")
    assert sum(p.numel() for p in plain.parameters()) == r["widths"][0]["params"]
    assert f"accuracy {r['widths'][0]['accuracy']:.4f}" in out


def test_export_needs_a_width_or_a_budget_not_both(run, tmp_path, capsys):
    for args in ([], ["--width", "0.5", "--max-params", "1000"]):
        with pytest.raises(SystemExit, match="--width or a budget"):
            _export(capsys, "--run", str(run), "--out", str(tmp_path / "x.pt"), *args)
