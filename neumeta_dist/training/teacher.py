"""The first stage: train (or load) the full-width teacher, fold its BN, smooth its channels.

Artefacts in `<run>/teacher/`: `teacher.pt` (BN state dict, family, test accuracy; a teacher
imported from a model zoo by `teacher.checkpoint` is stored here once scored) and
`reference.pt` (folded + permuted weights that the INR reconstructs and that fill every
layer it does not generate, with the permutations and total-variation numbers).

While it trains, the teacher checkpoints like an INR stage (training/checkpointer.py, in
`teacher/checkpoint_<step>/`): every `teacher.save_every` steps, at every epoch end, and at
the next step boundary after SIGUSR2/SIGTERM (then it exits 75, distributed/preemption.py).
A checkpoint holds the prepared network and SGD momentum (`accelerator.save_state`, RNG
states included), the scheduler and the data position; the data order is a function of
(seed, epoch), so a relaunch (`train.resume`, as for any stage) skips exactly the batches
of the epoch already consumed and ends with the uninterrupted run's weights. A relaunch on
another number of processes trains the rest of the epoch dealt over its ranks, its cosine
continuing from the samples trained (data/position.py). `teacher.pt` is written last, as the
stage's result.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import CheckpointError, atomic_torch_save, load_torch
from ..config import Config
from ..data import Splits, sample_images, train_batches
from ..distributed import data_parallel as parallel
from ..distributed import preemption
from ..evaluation.accuracy import accuracy
from ..models import zoo
from ..models.family import Family, Teacher, apply_layer, parameter_count
from ..run import RunDir
from .checkpointer import Checkpointer
from .execution import Execution
from .logger import Logger
from .probe import Callback


def load_teacher(cfg: Config, family: Family) -> dict | None:
    """The run's own teacher artefact, else `teacher.checkpoint`'s; None when it has neither."""
    path = RunDir(cfg.run_dir).teacher
    if path.exists():
        return load_torch(path, "teacher checkpoint")
    if not cfg.teacher.checkpoint:
        return None
    return import_teacher(cfg.teacher.checkpoint, cfg.teacher.format, family)


def teacher_network(family: Family, art: dict) -> Teacher:
    """The BN network a teacher artefact holds (teacher.pt, or an imported one), in eval mode."""
    net = Teacher(family)
    net.load_state_dict(art["state_dict"])
    return net.eval()


def import_teacher(spec: str, fmt: str, family: Family) -> dict:
    """`teacher.checkpoint` (a path, a URL or torchvision weights: models/zoo.py): our artefact
    as saved, or a model zoo's state dict (torchvision's ResNet layout) mapped onto the family,
    its accuracy None until measured."""
    try:
        path = zoo.locate(spec)
    except ValueError as e:
        raise CheckpointError(f"teacher.checkpoint {spec}: {e}") from None
    obj = load_torch(path, "teacher checkpoint (teacher.checkpoint)")
    try:
        fmt = zoo.checkpoint_format(obj) if fmt == "auto" else fmt
        if fmt == "torchvision":
            return {"state_dict": zoo.from_torchvision(family, obj), "family": dataclasses.asdict(family),
                    "accuracy": None, "params": parameter_count(family, family.full_sizes()),
                    "source": {"path": spec, "file": str(path), "format": fmt}}
    except ValueError as e:  # a checkpoint problem: one line under every entry point
        raise CheckpointError(f"teacher.checkpoint {path} ({fmt} format): {e}") from None
    if not isinstance(obj, dict) or obj.get("family") != dataclasses.asdict(family):
        found = obj.get("family", "unlabelled") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"teacher.checkpoint {path} is a {found} network, "
                              f"the config asks for {dataclasses.asdict(family)}: fix model.* or the path")
    return obj


def train_teacher(cfg: Config, accelerator, splits: Splits, family: Family, callback: Callback | None = None) -> dict:
    """Train with SGD + cosine (or resume that training), or load the run's or
    `teacher.checkpoint`'s; returns the teacher artefact.

    An imported zoo teacher is scored on the test split once and kept as the run's teacher.pt,
    so that every later command reads its accuracy instead of measuring it again.
    """
    with accelerator.main_process_first():  # a zoo teacher is downloaded once, not by every rank
        art = load_teacher(cfg, family)
    if art is not None and art["accuracy"] is not None:
        return art
    run = RunDir(cfg.run_dir)
    path = run.teacher
    t0 = time.perf_counter()
    if art is None:
        net, test = fit(Teacher(family), cfg, accelerator, splits, "teacher", run.checkpoints(0), callback)
        art = {"state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
               "family": dataclasses.asdict(family), "accuracy": test,
               "params": parameter_count(family, family.full_sizes())}
    else:
        net = teacher_network(family, art)
        art["accuracy"] = accuracy(net.to(accelerator.device), splits.test, cfg.data.eval_batch_size,
                                   accelerator)
        if accelerator.is_main_process:
            print(f"teacher {art['source']['path']} ({art['source']['format']} layout): "
                  f"test accuracy {art['accuracy']:.4f}")
    art["wall_s"] = round(time.perf_counter() - t0, 1)
    if accelerator.is_main_process:
        atomic_torch_save(art, path)
    accelerator.wait_for_everyone()
    # Every rank continues from the same bytes: BN running statistics are per rank under DDP.
    return load_torch(path, "teacher checkpoint")


def fit(model: Teacher, cfg: Config, accelerator, splits: Splits, name: str, checkpoints: Path | None = None,
        callback: Callback | None = None) -> tuple[Teacher, float]:
    """SGD + cosine on the training split (teacher.* settings); returns the net and its test accuracy.

    With `checkpoints` (the teacher's: `<run>/teacher/`) the training checkpoints there, stops
    on SIGUSR2/SIGTERM and resumes from there (module docstring); without (the per-width
    baseline, baselines/individual.py) it runs start to end.
    """
    watch = preemption.Preemption.watch() if checkpoints is not None else contextlib.nullcontext()
    with watch as stop:
        return _fit(model, cfg, accelerator, splits, name, checkpoints, callback, stop)


def _fit(model: Teacher, cfg: Config, accelerator, splits: Splits, name: str, checkpoints: Path | None,
         callback: Callback | None, stop: "preemption.Preemption | None") -> tuple[Teacher, float]:
    tc, callback = cfg.teacher, callback or Callback()
    ex = Execution.from_config(cfg.train)  # the stages' precision and layout (not compiled: one fixed shape)
    ex.layout(model)
    opt = torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay,
                          nesterov=True)
    parallel.configure(accelerator, micro_batches=1, grad_clip=0.0, clip_mode="norm", batch_size=cfg.data.batch_size,
                       precision=cfg.train.precision)
    template = copy.deepcopy(model)
    model, opt = accelerator.prepare(model, opt)
    saver = _Checkpoints(cfg, accelerator, checkpoints, stop) if checkpoints is not None else None
    start = saver.find_resume_step() if saver else 0
    # the batches of the epoch consumed (on any number of processes) are skipped
    data = train_batches(cfg, accelerator, splits.train, (saver and saver.resume_position()) or start)
    end = max(1, tc.epochs * data.per_epoch)  # the schedule's length in this world's batches per rank
    # The cosine follows the data position, not a step count: a relaunch on another number of
    # processes continues it where the samples trained so far left it.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda _: 0.5 * (1 + math.cos(math.pi * min(data.batches_done(), end) / end)))
    if saver:
        saver.resume(sched)
    total = start + data.batches_until(tc.epochs)
    log = Logger(accelerator, RunDir(cfg.run_dir).tb(name), total, name, initial=start,
                 log_with=cfg.train.log_with, config=cfg.to_dict())
    model.train()
    for step in range(start, total):
        x, y = next(data)
        callback.on_batch(step, 0, x)
        with ex.autocast(accelerator.device):
            logits = model(ex.batch(x))
        loss = F.cross_entropy(logits.float(), y, label_smoothing=tc.label_smoothing)
        accelerator.backward(loss)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        done = step + 1
        log.count(len(x) * accelerator.num_processes)
        if done % cfg.train.log_every == 0:
            log.step(done, lambda: {f"{name}/loss": loss.item()}, f"{name}/loss", sched.get_last_lr()[0],
                     data.fault_scalars(), prefix=f"{name}/")
        epoch_end = data.position.consumed == 0
        if epoch_end:
            val = accuracy(_plain(accelerator, model, template), splits.val, cfg.data.eval_batch_size, accelerator)
            log.scalars(done, {f"{name}/val_accuracy": val})
            log.print(f"{name} epoch {data.position.epoch}/{tc.epochs}: val accuracy {val:.4f}")
        if saver:
            saver.after_step(done, total, epoch_end or done % cfg.train.log_every == 0, epoch_end, sched, data, log)
        callback.on_step_end(done)
    net = _plain(accelerator, model, template)
    test = accuracy(net, splits.test, cfg.data.eval_batch_size, accelerator)
    log.print(f"{name} test accuracy {test:.4f}")
    log.close()
    return net, test


class _Checkpoints:
    """The teacher's checkpoint policy over the stage Checkpointer: when to save, and the stop
    on a scheduler's signal (watched from the start of the training)."""

    def __init__(self, cfg: Config, accelerator, stage_dir: Path, stop: preemption.Preemption):
        self.cfg, self.accelerator, self.stop = cfg, accelerator, stop
        self.checkpointer = Checkpointer(cfg, accelerator, stage_dir, micro_batches=1)

    def find_resume_step(self) -> int:
        self.checkpointer.find_resume_point()
        return self.checkpointer.resume_step

    def resume_position(self):
        return self.checkpointer.resume_position

    def resume(self, sched) -> None:
        self.checkpointer.resume(sched)

    def after_step(self, done: int, total: int, poll: bool, epoch_end: bool, sched, data, log: Logger) -> None:
        """Checkpoint every `teacher.save_every` steps and at epoch ends; on a signal (other ranks
        asked where `poll`: preemption.py), checkpoint and exit 75 (unless the training is over:
        teacher.pt is then one step away)."""
        every = self.cfg.teacher.save_every
        if self.stop.requested(self.accelerator, poll) and done < total:
            self.checkpointer.save(done, sched, None, data)
            log.close()
            self.stop.exit(f"teacher step {done}")
        if epoch_end or (every and done % every == 0):
            self.checkpointer.save(done, sched, None, data)


def _plain(accelerator, prepared, template: Teacher) -> Teacher:
    """An eval-mode copy of a prepared network with whole parameters: evaluated outside DDP
    or DeepSpeed, so ranks may run different numbers of batches (ZeRO-3 could not).

    Every rank holds rank 0's network, the one teacher.pt and the checkpoints keep: BN running
    statistics are per rank under DDP (buffers are not broadcast), so otherwise each rank would
    score its own, and a resumed run (every rank loads rank 0's) would score differently."""
    net = copy.deepcopy(template)
    net.load_state_dict(parallel.full_state_dict(accelerator, accelerator.unwrap_model(prepared)))
    net = net.to(accelerator.device).eval()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # the process group itself, as data/loaders.py reduces its fault counts
        for t in net.state_dict().values():
            torch.distributed.broadcast(t, src=0)
    return net


@torch.no_grad()
def build_reference(cfg: Config, accelerator, family: Family, art: dict, splits: Splits) -> dict:
    """Folded (+ smoothed) teacher weights; checks the permutation kept the function."""
    path = RunDir(cfg.run_dir).reference
    if path.exists():
        return load_torch(path, "teacher reference")
    folded = teacher_network(family, art).folded()
    ref = {"weights": folded, "perms": {}, "tv_before": None, "tv_after": None}
    if cfg.smoothing.enabled:
        from ..core.smoothing import smooth
        ranked = family.scalable_groups() if cfg.smoothing.order == "importance" else frozenset()
        weights, perms, stats = smooth(family, folded, cfg.smoothing.two_opt_rounds, ranked)
        x = sample_images(splits.val, 256)
        before = family.forward(x, lambda s, h: apply_layer(s, h, folded))
        after = family.forward(x, lambda s, h: apply_layer(s, h, weights))
        drift = (before - after).abs().max().item()
        if drift > 1e-3 * max(1.0, before.abs().max().item()):
            raise RuntimeError(f"smoothing changed the teacher's logits by {drift:.3g}: a permutation bug")
        ref.update(weights=weights, perms=perms, tv_before=stats["tv_before"], tv_after=stats["tv_after"],
                   logit_drift=drift)
        if accelerator.is_main_process:
            print(f"smoothing: total variation {stats['tv_before']:.4f} -> {stats['tv_after']:.4f}, "
                  f"max logit change {drift:.2e}")
    if accelerator.is_main_process:
        atomic_torch_save(ref, path)
    accelerator.wait_for_everyone()
    return ref
