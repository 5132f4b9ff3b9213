"""`train.log_with`: experiment trackers through Accelerate — TensorBoard by default, any other
tracker one config key away. Tested with MLflow's file store (offline, the `mlflow` extra, which
`make test` installs): the same scalars reach both, and the resolved config is logged."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from neumeta_dist.config import ConfigError, load_config
from neumeta_dist.training import pipeline
from neumeta_dist.training.tracking import metric_name

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs/demo.yaml"
TINY = ["data.dataset=synthetic", "data.train_limit=128", "data.test_limit=64", "data.batch_size=32",
        "data.val_fraction=0.25", "model.width=0.25", "teacher.epochs=1", "meta.generated=last_block",
        "smoothing.two_opt_rounds=1", "inr.hidden=8", "inr.layers=1", "inr.num_freqs=2", "train.max_steps=4",
        "train.log_every=1", "train.widths_per_step=1", "recipe.warmup_steps=0", "eval.widths=[0.5,1.0]",
        "eval.samples=1", "eval.calib_samples=32", "eval.calibrate=evaluated"]


def _train(run_dir: Path, log_with: str):
    cfg = load_config(DEMO, [*TINY, f"train.log_with={log_with}", f"run_dir={run_dir}"])
    pipeline.run(cfg)
    return cfg


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A run logged to TensorBoard and MLflow at once; MLflow's store is <run>/mlruns."""
    pytest.importorskip("mlflow")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    run_dir = tmp_path_factory.mktemp("tracked") / "run"
    return run_dir, _train(run_dir, "tensorboard,mlflow")


def _mlflow_runs(run_dir: Path) -> dict:
    from mlflow import MlflowClient
    client = MlflowClient((run_dir / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name(run_dir.name)
    return client, {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}


def _tensorboard(run_dir: Path, name: str) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(run_dir / "tb" / name))
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def test_every_loop_logs_the_same_scalars_to_tensorboard_and_mlflow(tracked):
    run_dir, _ = tracked
    client, runs = _mlflow_runs(run_dir)
    assert {"teacher", "stage_1", "eval"} <= set(runs)
    for name in ("teacher", "stage_1", "eval"):
        tb = _tensorboard(run_dir, name)
        assert tb and set(runs[name].data.metrics) == {metric_name("mlflow", tag) for tag in tb}
        for tag, points in tb.items():
            history = sorted((m.step, m.value) for m in
                             client.get_metric_history(runs[name].info.run_id, metric_name("mlflow", tag)))
            assert [s for s, _ in history] == [s for s, _ in points], (name, tag)
            assert [v for _, v in history] == pytest.approx([v for _, v in points], rel=1e-6), (name, tag)


def test_the_resolved_config_is_logged_as_hyperparameters(tracked):
    run_dir, cfg = tracked
    _, runs = _mlflow_runs(run_dir)
    params = runs["stage_1"].data.params
    assert params["train.max_steps"] == "4" and params["model.width"] == "0.25"
    assert params["train.log_with"] == "tensorboard,mlflow" and params["eval.widths"] == "[0.5, 1.0]"
    (hparams,) = (run_dir / "tb" / "stage_1").glob("*/hparams.yml")  # TensorBoard's copy
    assert yaml.safe_load(hparams.read_text())["inr.hidden"] == cfg.inr.hidden == 8


def test_switching_tracker_is_one_key(tmp_path):
    """log_with=mlflow alone: no TensorBoard folder, the scalars in MLflow."""
    pytest.importorskip("mlflow")
    from neumeta_dist.training.logger import Logger

    class MainProcess:
        is_main_process = True
    run_dir = tmp_path / "run"
    log = Logger(MainProcess(), run_dir / "tb" / "stage_1", 2, "stage_1", log_with="mlflow", config={"train": {"lr": 0.1}})
    log.scalars(1, {"train/loss": 2.5})
    log.close()
    assert not (run_dir / "tb").exists()
    client, runs = _mlflow_runs(run_dir)
    assert runs["stage_1"].data.metrics == {"train/loss": 2.5} and runs["stage_1"].data.params == {"train.lr": "0.1"}


def test_an_unknown_tracker_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"train\.log_with: 'tensorbored': unknown tracker 'tensorbored' "
                                          r"\(allowed, comma-separated: tensorboard, mlflow, wandb"):
        load_config(DEMO, ["train.log_with=tensorbored"])
