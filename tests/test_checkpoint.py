"""Checkpoints: written whole or not at all, and a damaged one is skipped, never loaded."""
from __future__ import annotations

import pytest
import torch

from neumeta_dist import checkpoint as ckpt
from neumeta_dist.config import load_config


@pytest.fixture
def stage(tmp_path):
    """A stage directory with two real `accelerator.save_state` checkpoints (steps 1 and 2)."""
    from accelerate import Accelerator
    acc = Accelerator(cpu=True)
    model, opt = acc.prepare(torch.nn.Linear(4, 3), torch.optim.AdamW(torch.nn.Linear(4, 3).parameters()))
    for step in (1, 2):
        ckpt.save_state(acc, tmp_path, step, {"world_size": 1}, {"ema": {"step": step}})
    return tmp_path


def test_newest_whole_checkpoint_is_chosen(stage):
    assert ckpt.latest_checkpoint(stage) == stage / "checkpoint_00000002"
    meta = ckpt.read_meta(stage / "checkpoint_00000002")
    assert meta["step"] == 2 and {"model.safetensors", "optimizer.bin", "ema.pt"} <= set(meta["files"])
    assert not list(stage.glob(".tmp_*"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "no_meta"])
def test_damaged_newest_checkpoint_is_skipped_with_a_warning(stage, damage):
    newest = stage / "checkpoint_00000002"
    f = newest / "optimizer.bin"
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[:len(data) // 2])
    elif damage == "flip":
        f.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif damage == "delete":
        f.unlink()
    else:
        (newest / "meta.json").unlink()
    with pytest.warns(UserWarning, match="skipping checkpoint .*checkpoint_00000002"):
        assert ckpt.latest_checkpoint(stage) == stage / "checkpoint_00000001"
    with pytest.raises(ckpt.CheckpointError, match="train.resume=.*unusable checkpoint"):
        ckpt.named_checkpoint(newest)


def test_named_checkpoint_must_exist(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no such checkpoint directory"):
        ckpt.named_checkpoint(tmp_path / "checkpoint_00000009")


def test_config_digest_ignores_where_and_how_often_a_run_saves_and_resumes():
    base = load_config(None, [])
    same = load_config(None, ["run_dir=elsewhere", "train.resume=none", "train.save_every=7",
                              "train.keep_checkpoints=5", "train.log_every=3", "teacher.save_every=4"])
    assert base.digest() == same.digest()
    assert base.digest() != load_config(None, ["train.lr=1e-3"]).digest()
