"""ImageNet's path end to end, in miniature: an ImageFolder of random JPEGs (one of them
corrupt) → `neumeta-dist shards` → `accelerate launch launch/train.py` with
configs/imagenet_resnet18.yaml on 2 real processes (gloo), 2 DataLoader workers each: teacher
(1 epoch), smoothing, one INR stage, the width sweep on the test shards."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import make_image_folder

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = ["data.image_size=32", "data.batch_size=8", "data.eval_batch_size=16", "data.num_workers=2",
        "data.shuffle_buffer=32", "data.max_bad_fraction=0.1", "model.width=0.125", "teacher.epochs=1",
        "teacher.lr=0.05", "inr.hidden=16", "inr.layers=1", "inr.num_freqs=4", "recipe.units_per_stage=4",
        "train.max_steps=3", "train.log_every=1", "train.widths_per_step=2", "train.warmup_steps=0",
        "smoothing.two_opt_rounds=2", "eval.widths=[0.5,1.0]",
        # the config's GPU recipe at CPU scale: a teacher trained here, fp32, a short warm-up
        "teacher.checkpoint=", "train.precision=fp32", "train.channels_last=false", "recipe.warmup_steps=20",
        "train.select_every=0", "eval.samples=1"]


def test_imagenet_config_trains_end_to_end_from_shards_written_by_the_cli(tmp_path):
    src = make_image_folder(tmp_path / "imagenet", per_class=24, val=4)
    bad = src / "train" / "n01" / "n01_3.JPEG"
    bad.write_bytes(bad.read_bytes()[:150])
    env = {**os.environ, "NEUMETA_NO_BAR": "1", "OMP_NUM_THREADS": "1"}
    shards = tmp_path / "shards"
    # --no-verify: the writer refuses an undecodable image when it verifies (tests/test_bad_input.py);
    # copied unchecked, the corrupt bytes reach the shards and test the reader's tolerance
    out = subprocess.run([str(BIN / "neumeta-dist"), "shards", "--source", "imagefolder", str(src), "--out",
                          str(shards), "--maxcount", "10", "--holdout", "0.1", "--no-verify"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    index = json.loads((shards / "index.json").read_text())
    assert index["splits"]["test"]["count"] == 12
    run = tmp_path / "run"
    # the budget `plan` prints for the config, from the shards' own count (27 training images here)
    plan = subprocess.run([str(BIN / "neumeta-dist"), "plan", "--config", str(ROOT / "configs/imagenet_resnet18.yaml"),
                           f"data.root={shards}", *TINY, f"run_dir={run}"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert plan.returncode == 0, plan.stderr
    n_train = index["splits"]["train"]["count"]
    assert f"epochs of {n_train:,}" in plan.stdout and "16 heads of 16 × 1" in plan.stdout
    cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "launch/train.py"), "--config",
           str(ROOT / "configs/imagenet_resnet18.yaml"), f"data.root={shards}", *TINY, f"run_dir={run}"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["model"] == "resnet18" and results["dataset"] == "imagenet"
    assert [w["width"] for w in results["widths"]] == [0.5, 1.0]
    # the corrupt JPEG: named on stderr by the worker process that met it, counted in TensorBoard
    assert "corrupt sample train/n01/n01_3 in" in out.stderr
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(run / "tb" / "teacher"))
    ea.Reload()
    assert ea.Scalars("data/corrupt_samples")[-1].value == 1
    assert {"data/lost_samples", "data/padded_batches"} <= set(ea.Tags()["scalars"])
