"""The training step does no host work a GPU would wait for (conftest.HostWork counts it,
attributed to the code that asked):
- no reads of device values between log steps — teacher and stage steps, one process and two
  (DDP: the preemption flag is polled at log steps), coordinate-parallel generation's table
  check read once per width, the reconstruction warm-up's loss read once;
- no tensors made on the host and no copies inside the step — generation, student, losses and
  backward on the `meta` device (a tensor made without a device is then the one CPU tensor in
  sight), in-memory batches gathered on the device, shard batches normalised by statistics
  uploaded once;
- no coordinate table rebuilt for a width already seen, over a continuous width range.

On a CPU every tensor is on the host, so syncs are counted by op (what would block on a GPU).
"""
from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from conftest import HostWork, make_net

from neumeta_dist.config import load_config
from neumeta_dist.core.coords import build_table
from neumeta_dist.models.family import Teacher
from neumeta_dist.models.registry import build_family
from neumeta_dist.recipe.losses import step_losses
from neumeta_dist.recipe.widths import TrainingWidths
from neumeta_dist.training import probe

pytestmark = pytest.mark.usefixtures("one_thread")


class Window(probe.Callback):
    """HostWork over whole optimiser steps: from the end of step `first` to the end of `last`."""

    def __init__(self, first: int, last: int):
        self.first, self.last, self.work = first, last, HostWork()

    def on_step_end(self, done: int) -> None:
        if done == self.first:
            self.work.__enter__()
        elif done == self.last:
            self.work.__exit__(None, None, None)


# 192 training images in batches of 32: the teacher's epoch ends at step 6, its log at step 5; the
# stage's 4 steps log at step 4 only. The GPU path's switches on; in-place KD adds a no-grad pass.
STEPS = ["data.dataset=synthetic", "data.train_limit=256", "data.test_limit=64", "data.batch_size=32",
         "data.val_fraction=0.25", "model.width=0.25", "teacher.epochs=1", "meta.generated=authors",
         "inr.hidden=16", "inr.layers=1", "inr.num_freqs=4", "train.max_steps=4", "train.log_every=5",
         "train.widths_per_step=3", "recipe.units_per_stage=9", "recipe.warmup_steps=0",
         "meta.norm=skipinit", "eval.widths=[1.0]", "loss.kd=1.0", "loss.inplace_kd=1.0",
         "train.precision=bf16", "train.channels_last=true"]


def _stage_windows(run_dir, stages, monkeypatch) -> dict[int, Window]:
    """Run `stages` of the tiny config, each watched from the end of its step 1 to the end of its
    last step before a log step (teacher: steps 2-4; stage 1: steps 2-3)."""
    from neumeta_dist.training.pipeline import run

    windows = {0: Window(1, 4), 1: Window(1, 3)}
    monkeypatch.setattr(probe, "from_env", lambda stage, rank: windows[stage])
    cfg = load_config("configs/blockwise.yaml", [*STEPS, f"run_dir={run_dir}"])
    for stage in stages:
        run(cfg, only_stage=stage)
    return {k: windows[k] for k in stages}


def test_teacher_and_stage_steps_between_log_steps_read_nothing_back_from_the_device(tmp_path, monkeypatch):
    for stage, window in _stage_windows(tmp_path, (0, 1), monkeypatch).items():
        assert window.work.ops > 1000, "the window saw no step"
        assert HostWork.ours(window.work.syncs) == [], (stage, HostWork.ours(window.work.syncs))


def _ddp_rank(rank: int, port: int, run_dir: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", NEUMETA_NO_BAR="1")
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as monkeypatch:
        window = _stage_windows(run_dir, (1,), monkeypatch)[1]
    torch.save({"ops": window.work.ops, "ours": HostWork.ours(window.work.syncs)}, f"{run_dir}/rank{rank}.pt")


def test_ddp_stage_steps_between_log_steps_read_nothing_back_either(tmp_path, monkeypatch):
    """Two processes (gloo): the preemption flag is all-reduced and read back at log steps only."""
    import torch.multiprocessing as mp
    from conftest import free_port

    _stage_windows(tmp_path, (0,), monkeypatch)
    mp.spawn(_ddp_rank, args=(free_port(), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        seen = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert seen["ops"] > 1000 and seen["ours"] == [], (rank, seen["ours"])


def test_generation_forward_losses_and_backward_make_no_tensor_on_the_host(tiny_resnet20):
    """The whole differentiable step on the meta device, caches cold (the coordinate table is
    built inside): an `arange` without a device, or a table built on the host and uploaded,
    shows as a host tensor or an upload. (Noise from the device's own generator: the step's
    seeded one is re-made on the device by `coords.normalise`, which meta cannot hold.)"""
    cfg = load_config(None, ["loss.kd=1.0", "loss.inplace_kd=1.0"])
    with torch.device("meta"):
        net = make_net(tiny_resnet20, norm="skipinit").train()
        teacher = Teacher(tiny_resnet20).eval()
        x, y = torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,))
    with HostWork() as work:
        with torch.no_grad():
            full, t_logits = net(x, 1.0)[0], teacher(x)
        logits, generated = net(x, 0.5, noise=1.0)
        terms = step_losses(cfg.loss, logits.float(), y, generated, net.reference, False, t_logits.float(),
                            full.float())
        terms["total"].backward()
    assert net.inr.w_in.grad is not None and work.ops > 100
    assert HostWork.ours(work.host_tensors) == [] and HostWork.ours(work.uploads) == []
    assert HostWork.ours(work.syncs) == []


def test_table_rebuilds_over_100_continuous_draws_are_the_distinct_channel_count_sets(monkeypatch):
    """ResNet-20 over widths 0.25–1: more distinct networks in 100 draws than a cache of a few
    dozen tables holds; each is built once."""
    from neumeta_dist.core import metamorphic

    builds = []
    monkeypatch.setattr(metamorphic, "build_table", lambda *a, **k: builds.append(a[1]) or build_table(*a, **k))
    family = build_family("resnet20", 1.0, in_channels=3)
    net = make_net(family)
    widths, rng = TrainingWidths(0.25, 1.0, ()), random.Random(0)
    draws = [widths.draw(2, False, rng) for _ in range(100)]
    distinct = {tuple(sorted(net.sizes(f).items())) for f in draws}
    assert len(distinct) > 40
    for f in draws:
        net.table(f)
    assert len(builds) == len(distinct)


def test_in_memory_training_batches_are_gathered_on_the_device():
    """The dataset is uploaded once and each epoch's order once; a batch then makes no host
    tensor and no copy (on the meta device, where any would show)."""
    from torch.utils.data import TensorDataset

    from neumeta_dist.data import train_batches

    accelerator = SimpleNamespace(num_processes=1, process_index=0, device=torch.device("meta"))
    cfg = load_config(None, ["data.batch_size=4"])
    batches = train_batches(cfg, accelerator, TensorDataset(torch.randn(16, 1, 4, 4), torch.randint(0, 10, (16,))))
    next(batches)  # the epoch's permutation: drawn on the host (seeded), uploaded once
    with HostWork() as work:
        x, y = next(batches)
        next(batches)
    assert x.device.type == "meta" and x.shape == (4, 1, 4, 4) and y.shape == (4,)
    assert HostWork.ours(work.uploads) == [] and HostWork.ours(work.host_tensors) == []


def test_with_several_processes_only_a_polling_step_asks_the_other_ranks():
    """Asking is an all-reduce read back on the host: off a log step it must not happen (here
    any collective would fail: there is no process group)."""
    from neumeta_dist.distributed.preemption import Preemption

    stop, accelerator = Preemption(), SimpleNamespace(num_processes=2, device=torch.device("cpu"))
    stop.signum = 15
    assert stop.requested(accelerator, poll=False) is False
    with pytest.raises((RuntimeError, ValueError)):  # no default process group
        stop.requested(accelerator, poll=True)


def test_watching_for_preemption_records_the_first_signal_and_gives_the_handlers_back():
    import os
    import signal

    from neumeta_dist.distributed.preemption import SIGNALS, Preemption

    before = {s: signal.getsignal(s) for s in SIGNALS}
    with Preemption.watch() as stop:
        os.kill(os.getpid(), signal.SIGUSR2)  # Submitit's warning before the time limit, then SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGUSR2
        assert stop.requested(SimpleNamespace(num_processes=1))
    assert {s: signal.getsignal(s) for s in SIGNALS} == before


def test_coordinate_parallel_generation_reads_back_its_table_check_once_per_width(tiny_resnet20, tmp_path):
    """The check that every rank cuts the same table gathers at every call (every rank must
    call the same collectives) but waits for the answer only at a width's first table."""
    import torch.distributed as dist

    from neumeta_dist.distributed.coordinate_parallel import CoordinateParallel

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        net = make_net(tiny_resnet20)
        net.generation = CoordinateParallel(dist.new_group(), 0, 1)
        reads = []
        for width in (1.0, 0.5, 1.0, 0.5, 1.0):
            with HostWork() as work:
                net.generate(width, noise=1.0, generator=torch.Generator().manual_seed(0))
            reads.append(len(HostWork.ours(work.syncs)))
    finally:
        dist.destroy_process_group()
    assert reads == [1, 1, 0, 0, 0], reads


def test_shard_batches_are_normalised_without_a_host_tensor_per_batch():
    from neumeta_dist.data.stream import normalize

    spec = SimpleNamespace(mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    batch = torch.zeros(2, 3, 4, 4, dtype=torch.uint8, device="meta")
    normalize(batch, spec)  # the statistics reach the device once
    with HostWork() as work:
        out = normalize(batch, spec)
    assert out.dtype == torch.float32 and HostWork.ours(work.uploads + work.host_tensors) == []


def test_the_reconstruction_warmup_reads_its_loss_back_once_not_per_step(tiny_resnet20):
    from neumeta_dist.recipe.inr_init import reconstruction_warmup

    net = make_net(tiny_resnet20)
    with HostWork() as work:
        err = reconstruction_warmup(net, steps=6, lr=1e-3, fractions=[1.0, 0.5])  # 3 full-width steps
    assert err > 0 and len(HostWork.ours(work.syncs)) == 1  # the error it returns
