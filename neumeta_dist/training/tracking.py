"""Experiment trackers (`train.log_with`): Accelerate's tracker classes, one run per loop.

`train.log_with: tensorboard` (the default) writes `<run>/tb/<name>/` as before; any tracker
Accelerate supports is one key away (`mlflow`, `wandb`, `aim`, `comet_ml`, …; several:
`tensorboard,mlflow`). Every training loop — the teacher, each INR stage, the slimmable and
the individual baselines — and the width sweep open one tracker run named after it (`teacher`,
`stage_1`, `eval`, …) in the project named after the run directory, log the same scalars, and
store the resolved config as hyper-parameters. File-based trackers keep their files inside
the run directory unless their own environment variable says otherwise (MLflow:
`<run>/mlruns` unless MLFLOW_TRACKING_URI is set; W&B: `<run>/wandb`, offline with
WANDB_MODE=offline).

Accelerator-wide trackers (`Accelerator(log_with=…)`) are not used: the one Accelerator of a
process outlives its stages, and each stage is a run of its own, as its TensorBoard folder is.
The names live in config.py (TRACKERS), which validates `train.log_with` without Accelerate.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..config import tracker_names

_OUR_URIS: set[str] = set()  # MLflow stores this process pointed MLflow at (see _make)


def open_trackers(log_with: str, run_root: Path, name: str, config: dict | None = None) -> list:
    """Started trackers for the loop `name` of the run in `run_root`, the resolved `config`
    (nested dict) stored as hyper-parameters. Call on the main process only."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    run_root = Path(run_root)
    trackers = []
    for kind in tracker_names(log_with):
        tracker = _make(LOGGER_TYPE_TO_CLASS[kind], kind, run_root, name)
        tracker.start()
        if config is not None:
            tracker.store_init_configuration(hyperparameters(config))
        trackers.append(tracker)
    return trackers


def _make(cls, kind: str, run_root: Path, name: str):
    project = run_root.resolve().name  # e.g. "demo" for runs/demo
    if kind == "tensorboard":
        return cls(name, run_root / "tb")  # <run>/tb/<name>: the layout every reader knows
    if kind == "mlflow":
        # a folder in the run, as TensorBoard's: no server; set_tracking_uri exports the variable,
        # so one this process set for an earlier run is ours to replace, the user's is not
        if os.environ.get("MLFLOW_TRACKING_URI") in (None, *_OUR_URIS):
            import mlflow

            # MLflow ≥ 3.7 asks for this opt-in to its file store (a database is the new default)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            _OUR_URIS.add((run_root / "mlruns").resolve().as_uri())
            mlflow.set_tracking_uri((run_root / "mlruns").resolve().as_uri())
        return cls(experiment_name=project, run_name=name)
    if kind == "wandb":
        (run_root / "wandb").mkdir(parents=True, exist_ok=True)
        return cls(project, name=name, dir=str(run_root), reinit="create_new")
    if kind == "aim":
        return cls(name, run_root)
    return cls(name)  # the rest take the run's name and their own environment


def hyperparameters(config: dict, prefix: str = "") -> dict[str, str | int | float | bool]:
    """The nested config flattened to `section.key` scalars (lists as text: trackers take scalars)."""
    out: dict[str, str | int | float | bool] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(hyperparameters(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (str, int, float, bool)) else str(value)
    return out


def log(trackers: list, values: dict[str, float], step: int) -> None:
    for tracker in trackers:
        tracker.log({metric_name(tracker.name, k): v for k, v in values.items()}, step=step)


def metric_name(tracker: str, name: str) -> str:
    """`name` as `tracker` accepts it: MLflow refuses `@` (`val/accuracy@0.5`), so it gets
    `val/accuracy_at_0.5`; every other tracker the name as it is."""
    return name.replace("@", "_at_") if tracker == "mlflow" else name


def close(trackers: list) -> None:
    for tracker in trackers:
        tracker.finish()
