"""Checkpoints: written whole or not at all, a damaged one is skipped, never loaded, and one that
cannot resume on this run (world size, mode, config) is refused in one line."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from conftest import free_port

from neumeta_dist import checkpoint as ckpt
from neumeta_dist.config import load_config
from neumeta_dist.data.position import DataPosition
from neumeta_dist.training.checkpointer import Checkpointer


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


SHARDS = ["data.dataset=shards", "data.shards=s/index.json#train", "data.val_shards=s/index.json#val",
          "data.test_shards=s/index.json#test"]


def _resume(tmp_path, overrides=(), zero=0, **meta):
    """find_resume_point of a one-process run over a stage whose only checkpoint (meta.json
    alone: every refusal comes before anything loads) was written by 2 DDP processes."""
    cfg = load_config(None, list(overrides), files=False)
    ckpt_dir = tmp_path / "stage_1" / "checkpoint_00000004"
    ckpt_dir.mkdir(parents=True)
    meta = {"config_digest": cfg.digest(), "world_size": 2, "mode": "ddp", "step": 4, "files": {},
            "data": {"epoch": 1, "consumed": 256}, **meta}
    (ckpt_dir / "meta.json").write_text(json.dumps(meta))
    plugin = SimpleNamespace(zero_stage=zero, deepspeed_config={}) if zero else None
    acc = SimpleNamespace(num_processes=1, process_index=0, is_main_process=True, wait_for_everyone=lambda: None,
                          state=SimpleNamespace(deepspeed_plugin=plugin))
    checkpointer = Checkpointer(cfg, acc, ckpt_dir.parent)
    checkpointer.find_resume_point()
    return checkpointer


def test_ddp_checkpoint_resumes_on_another_number_of_processes_at_its_data_position(tmp_path):
    resumed = _resume(tmp_path)
    assert resumed.resizes and resumed.resume_step == 4 and resumed.resume_position == DataPosition(1, 256, ((2, 1),))


@pytest.mark.parametrize("overrides, zero, meta, message", [
    ((), 3, {}, "written under ddp, this run is zero3: relaunch with the same accelerate config"),
    ((), 0, {"config_digest": "0"}, "written by a different config"),
    ((), 0, {"data": {"epoch": 1}}, "records no data position .*: relaunch with --num_processes 2"),
])
def test_resume_point_that_cannot_change_world_size_or_mode_is_refused(tmp_path, overrides, zero, meta, message):
    with pytest.raises(ckpt.CheckpointError, match=f"checkpoint_00000004 .*{message}"):
        _resume(tmp_path, overrides, zero, **meta)


def test_webdataset_checkpoint_at_an_epoch_end_resumes_on_another_number_of_processes(tmp_path):
    assert _resume(tmp_path, SHARDS, data={"epoch": 2, "consumed": 0}).resizes


def test_webdataset_checkpoint_mid_epoch_resumes_on_another_number_of_processes_with_its_legs(tmp_path):
    """The legs say which world sizes consumed the epoch: the stream replays them (test_elastic_stream)."""
    resumed = _resume(tmp_path, SHARDS, data={"epoch": 1, "consumed": 384, "legs": [[2, 1], [1, 1]]})
    assert resumed.resizes and resumed.resume_position == DataPosition(1, 384, ((2, 1), (1, 1)))


def test_failed_universal_conversion_names_the_checkpoint_and_leaves_no_folder(tmp_path):
    from neumeta_dist.distributed import universal
    bad = tmp_path / "checkpoint_00000004"
    (bad / "pytorch_model").mkdir(parents=True)
    (bad / "pytorch_model" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"not a torch file")
    with pytest.raises(ckpt.CheckpointError, match="checkpoint_00000004: DeepSpeed's ds_to_universal could not "
                                                   "convert .*resume it on the number of processes that wrote it"):
        universal.convert(bad)
    assert [p.name for p in bad.iterdir()] == ["pytorch_model"]


def _slow_rank_saver(rank: int, port: int, stage_dir: str) -> None:
    """One of two gloo ranks saving a checkpoint, rank 1 writing its RNG file a second late."""
    import accelerate.accelerator as acc_module
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    torch.set_num_threads(1)
    save = acc_module.save_accelerator_state

    def late(*args, **kwargs):
        if rank == 1:
            time.sleep(1.0)
        return save(*args, **kwargs)

    acc_module.save_accelerator_state = late
    acc = Accelerator(cpu=True, kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")])
    model = torch.nn.Linear(4, 3)
    acc.prepare(model, torch.optim.AdamW(model.parameters()))
    ckpt.save_state(acc, Path(stage_dir), 1, {"world_size": 2}, {})
    acc.end_training()


def test_checkpoint_waits_for_every_rank_before_it_is_sealed(tmp_path):
    """Every rank's RNG file is inside the renamed checkpoint and its manifest, however late the
    rank writes it (the main process used to seal the directory without waiting)."""
    mp.spawn(_slow_rank_saver, args=(free_port(), str(tmp_path)), nprocs=2)
    meta = ckpt.read_meta(tmp_path / "checkpoint_00000001")
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= set(meta["files"])
    assert ckpt.problem(tmp_path / "checkpoint_00000001") is None and not list(tmp_path.glob(".tmp_*"))
