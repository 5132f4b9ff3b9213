"""The library face (`import neumeta_dist as nd`): a finished run gives, with no dataset present,
exactly the networks its evaluation scored — trained by `nd.train` on real Fashion-MNIST files
that are then removed."""
from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
import torch

import neumeta_dist as nd
from neumeta_dist.config import load_config
from neumeta_dist.data import load_splits
from neumeta_dist.distributed.preemption import SIGNALS
from neumeta_dist.evaluation.accuracy import accuracy
from neumeta_dist.evaluation.calibration import MissingCalibration
from neumeta_dist.evaluation.export import materialise
from neumeta_dist.evaluation.sweep import merged_weights

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")
# the demo's recipe (recalibration of every conv, merged noisy samples, nested coordinates) in miniature
TINY = ["data.dataset=fashion-mnist", "data.train_limit=256", "data.test_limit=200", "data.batch_size=64",
        "data.val_fraction=0.25", "model.width=0.25", "teacher.epochs=1", "smoothing.two_opt_rounds=1",
        "inr.hidden=16", "inr.layers=1", "inr.num_freqs=4", "train.max_steps=2", "train.widths_per_step=2",
        "recipe.warmup_steps=0", "eval.widths=[0.3,0.5,0.7,1.0]", "eval.samples=2", "eval.calib_samples=64"]


def _data_folder(path: Path) -> Path:
    """A data root of its own (links to the Debian package's files), so a test can take it away."""
    path.mkdir()
    for f in FMNIST.glob("*-ubyte.gz"):
        (path / f.name).symlink_to(f)
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A run trained and evaluated by `nd.train`, its test split kept in memory, its data removed."""
    if not (FMNIST / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed (make data)")
    root = tmp_path_factory.mktemp("api")
    data = _data_folder(root / "fashion-mnist")
    handlers = {s: signal.getsignal(s) for s in SIGNALS}
    run = nd.train(ROOT / "configs/demo.yaml", [*TINY, f"data.root={data}", f"run_dir={root / 'run'}"])
    assert isinstance(run, nd.Run)
    # the teacher and the stage watched SLURM's signals while they trained; a script keeps its own after
    assert {s: signal.getsignal(s) for s in SIGNALS} == handlers
    cfg = load_config(root / "run" / "config.yaml")
    test = load_splits(cfg.data, cfg.train.seed).test
    shutil.rmtree(data)
    return root / "run", test


@pytest.fixture
def no_data(monkeypatch):
    """Reading any dataset fails (beside the files being gone): nothing may need it."""
    def refuse(*_, **__):
        raise AssertionError("the dataset was read")
    monkeypatch.setattr("neumeta_dist.data.load_splits", refuse)


def test_nd_train_is_the_function_after_the_stage_loop_is_imported():
    from neumeta_dist.training.loop import train_stage  # the stage loop, training/loop.py
    assert nd.train.__module__ == "neumeta_dist" and callable(nd.train) and callable(train_stage)


def test_a_finished_run_gives_the_evaluated_network_at_every_width_without_its_data(finished, no_data):
    run_dir, test = finished
    run = nd.load(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    evaluated = results["widths"]
    storage = results["storage"]  # what the INR row keeps to emit every width, beside each network
    assert storage["inr"] > 0 and storage["total"] == storage["inr"] + storage["fixed"] + storage["alphas"]
    assert run.storage == storage
    assert [(w.width, w.kind) for w in run.widths] == [(r["width"], r["kind"]) for r in evaluated]
    for w in run.widths:
        net = run.network(width=w.width)
        assert isinstance(net, torch.nn.Module) and not net.training
        assert accuracy(net, test, 100) == w.accuracy
        assert run.params(w.width) == w.params == sum(p.numel() for p in net.parameters())
        assert run.macs(w.width) == w.macs


def test_the_stored_recalibration_is_what_makes_the_network(finished, no_data):
    """Without the stored maps the merged samples alone score differently: the test above can fail."""
    run = nd.load(finished[0])
    x = finished[1].tensors[0][:64]
    raw = materialise(run.net, merged_weights(run.net, 0.5, run.cfg.eval.samples, run.net.coord_noise)).eval()
    with torch.no_grad():
        assert not torch.allclose(run.network(width=0.5)(x), raw(x), atol=1e-3)


def test_a_width_never_evaluated_is_recalibrated_from_the_stored_networks(finished, no_data):
    """eval.calibrate=all keeps every distinct network, so any width works without data."""
    run = nd.load(finished[0])
    assert 0.62 not in [w.width for w in run.widths]
    assert run.network(width=0.62)(finished[1].tensors[0][:2]).shape == (2, 10)


def test_export_within_a_budget_writes_the_evaluated_network_without_data(finished, no_data, tmp_path):
    import onnxruntime
    run = nd.load(finished[0])
    row = next(w for w in run.widths if w.width == 0.7)
    run.export(tmp_path / "net.onnx", max_params=row.params)
    x = finished[1].tensors[0][:4]
    session = onnxruntime.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
    with torch.no_grad():
        assert torch.allclose(got, run.network(width=row.width)(x), atol=1e-4)


def test_a_run_evaluated_before_calibration_pt_loads_and_needs_its_data_for_recalibrated_widths(finished, tmp_path):
    run_dir, test = finished
    old = tmp_path / "run"
    shutil.copytree(run_dir, old)
    (old / "calibration.pt").unlink()
    run = nd.load(old)  # loads with no data
    with pytest.raises(MissingCalibration, match=r"stores no calibration\.pt.*neumeta-dist eval --run"):
        run.network(width=0.5)
    data = _data_folder(tmp_path / "fashion-mnist")  # with the data back, the width is recalibrated on it
    run = nd.load(old, [f"data.root={data}"])
    row = next(w for w in run.widths if w.width == 0.5)
    assert accuracy(run.network(width=0.5), test, 100) == row.accuracy
