"""`train.precision` is the one source of the step's precision: the launcher's
`--mixed_precision no` yields to it, another value must agree, and DeepSpeed follows it
(distributed/data_parallel.py) — its engine switches off an outer autocast it was not told of."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from neumeta_dist.config import load_config
from neumeta_dist.distributed.data_parallel import ParallelError, check_precision, configure

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.dataset=synthetic", "data.train_limit=256", "data.test_limit=64", "data.batch_size=32",
        "data.val_fraction=0.25", "model.width=0.25", "teacher.epochs=1", "meta.generated=authors",
        "inr.hidden=16", "inr.layers=1", "inr.num_freqs=4", "train.max_steps=2", "train.log_every=1",
        "train.widths_per_step=2", "recipe.units_per_stage=9", "recipe.warmup_steps=0", "meta.norm=skipinit",
        "eval.widths=[1.0]", "train.clip_mode=norm"]


@pytest.mark.parametrize("launcher,precision", [("no", "fp32"), ("no", "bf16"), ("bf16", "bf16")])
def test_the_launcher_yields_or_agrees(launcher, precision):
    check_precision(SimpleNamespace(mixed_precision=launcher), precision)


@pytest.mark.parametrize("launcher,precision", [("bf16", "fp32"), ("fp16", "bf16"), ("fp16", "fp32")])
def test_a_launcher_precision_that_disagrees_is_refused_in_one_line(launcher, precision):
    with pytest.raises(ParallelError, match=f"mixed_precision={launcher} disagrees with train.precision={precision}") as e:
        check_precision(SimpleNamespace(mixed_precision=launcher), precision)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_deepspeed_is_given_train_precision_as_its_autocast(precision):
    """On a GPU DeepSpeed's engine switches off an outer CUDA autocast unless its config's
    `torch_autocast` is on (on a CPU it leaves an outer CPU autocast alone: the launch below
    cannot show this), so the config must carry `train.precision`, whatever the launcher said."""
    plugin = SimpleNamespace(deepspeed_config={"bf16": {"enabled": "auto"}}, zero_stage=2)
    accelerator = SimpleNamespace(mixed_precision="no", state=SimpleNamespace(deepspeed_plugin=plugin),
                                  gradient_accumulation_steps=1, free_memory=lambda: None)
    configure(accelerator, 2, 1.0, "norm", 32, precision)
    ds = plugin.deepspeed_config
    assert ds["torch_autocast"] == {"enabled": precision == "bf16", "dtype": "bfloat16"}
    assert ds["bf16"] == {"enabled": False}  # DeepSpeed's own bf16 would cast the module, teacher buffers too


def test_a_zero2_launch_with_mixed_precision_no_trains_in_bf16(tmp_path):
    """A ZeRO-2 launch (one CPU process: the engine's path, in a few seconds), `--mixed_precision
    no`, `train.precision=bf16`: the student's logits come out in bf16 (the stage logs what
    its first step computed in)."""
    from neumeta_dist.training.pipeline import run

    run(load_config("configs/blockwise.yaml", [*TINY, f"run_dir={tmp_path}"]), only_stage=0)
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file", "configs/accelerate/zero2.yaml",
           "--num_processes", "1", "--mixed_precision", "no", "launch/train.py", "--config", "configs/blockwise.yaml",
           *TINY, "train.precision=bf16", f"run_dir={tmp_path}", "--stage", "1"]
    env = {**os.environ, "NEUMETA_NO_BAR": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "stage_1: the student computes in bfloat16 (train.precision=bf16)" in out.stdout + out.stderr
    final = torch.load(tmp_path / "stage_1" / "final.pt", weights_only=True)
    assert final["steps"] == 2 and all(torch.isfinite(v).all() for v in final["model"].values())
