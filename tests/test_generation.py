"""neumeta_dist.generation: coordinate-parallel generation equals single-process generation.

The multi-process tests start two real gloo processes (torch.multiprocessing.spawn); each
rank generates its slice of the table, and the weights and INR gradients it ends with are
compared here against one process generating the whole table on the global batch.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import free_port, make_net
from test_pipeline import BIN, ROOT, TINY, _env

from neumeta_dist.config import ConfigError, LossConfig, load_config
from neumeta_dist.distributed.coordinate_parallel import (
    generation_strategy,
    replicated,
    row_ranges,
    slice_segments,
)
from neumeta_dist.models.registry import build_family
from neumeta_dist.recipe.losses import step_losses

pytestmark = pytest.mark.usefixtures("one_thread")

WORLD, BATCH, SEED = 2, 8, 3  # BATCH images per rank
WIDTHS = (1.0, 0.75, 0.5)  # 0.75 and 0.5 cut the table at other rows than 1.0
STEP_WIDTHS = (1.0, 0.6)  # one training step: full width (with reconstruction), then a narrower one
LOSS = LossConfig(ce=1.0, recon=1.0, reg=1e-3)


def _family():
    return build_family("resnet20", 0.25, in_channels=1, num_classes=10)


def _net():
    return make_net(_family(), "all", seed=SEED)  # stem, every block, classifier: 1×1 to 3×3 kernels


def _global_batch():
    g = torch.Generator().manual_seed(SEED)
    return torch.randn(WORLD * BATCH, 1, 16, 16, generator=g), torch.randint(0, 10, (WORLD * BATCH,), generator=g)


def _noise(fraction: float) -> torch.Generator:
    """The same coordinate noise on every rank (as `train.step_rng` in coordinate-parallel mode)."""
    return torch.Generator().manual_seed(int(fraction * 1000))


def _generations(net) -> list[dict]:
    """Noise-free (eval) and noisy (train) networks at every width."""
    out = []
    for train in (False, True):
        net.train(train)
        with torch.no_grad():
            out += [net.generate(f, generator=_noise(f)) for f in WIDTHS]
    return out


def _step(net, x, y) -> None:
    """Backward of one training step's micro-batches (each a mean-reduced loss over its batch)."""
    net.train()
    for f in STEP_WIDTHS:
        logits, generated = net(x, f, generator=_noise(f))
        inner = net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net
        step_losses(LOSS, logits, y, generated, inner.reference, f == 1.0)["total"].backward()


def _inr_grads(net) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in net.inr.named_parameters()}


def _worker(rank: int, port: int, out: str) -> None:
    """One rank: coordinate-parallel generation, then one DDP step in each generation mode."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    x, y = _global_batch()
    xr, yr = x[rank * BATCH:(rank + 1) * BATCH], y[rank * BATCH:(rank + 1) * BATCH]
    result = {}
    for mode in ("coordinate_parallel", "replicated"):
        net = _net()
        net.generation = generation_strategy(mode)
        if mode == "coordinate_parallel":
            result["kind"] = type(net.generation).__name__
            result["weights"] = _generations(net)
        _step(torch.nn.parallel.DistributedDataParallel(net), xr, yr)
        result[mode] = _inr_grads(net)
    try:  # ranks that disagree on the width
        net.generation = generation_strategy("coordinate_parallel")
        net.generate(1.0 if rank == 0 else 0.5)
    except ValueError as e:
        result["mismatch"] = str(e)
    torch.save(result, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def test_each_rank_generates_every_weight_equal_to_single_process_generation(ranks):
    expected = _generations(_net())
    for r in ranks:
        assert r["kind"] == "CoordinateParallel"
        for got, want in zip(r["weights"], expected):
            assert got.keys() == want.keys()
            for name in want:
                torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=name)


def test_inr_gradients_equal_single_process_gradients_on_the_global_batch(ranks):
    """DDP's mean over ranks of the reduce-scattered gradients = the gradient of the mean loss
    on the concatenated batch, and = replicated DDP's gradient."""
    net = _net()
    _step(net, *_global_batch())
    expected = _inr_grads(net)
    assert any(g.abs().sum() > 0 for g in expected.values())
    for r in ranks:
        for mode in ("coordinate_parallel", "replicated"):
            for name, want in expected.items():
                torch.testing.assert_close(r[mode][name], want, rtol=1e-4, atol=1e-6, msg=f"{mode} {name}")


def test_ranks_generating_different_widths_get_an_error_not_a_hang(ranks):
    for r in ranks:
        assert "ranks generate different tables" in r.get("mismatch", "no error")


def test_row_ranges_tile_the_table_in_balanced_contiguous_pieces():
    for n, world in [(10, 2), (11, 2), (7, 3), (5, 5)]:
        ranges = row_ranges(n, world)
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1


def test_sliced_segments_reassemble_the_segments_with_their_columns():
    segments, cols = [(0, 0, 4), (3, 4, 5), (1, 5, 12)], [None, torch.tensor([4]), None]
    pieces = [slice_segments(segments, cols, lo, hi) for lo, hi in [(0, 3), (3, 9), (9, 12)]]
    assert pieces[0] == ([(0, 0, 3)], [None])
    assert pieces[1][0] == [(0, 0, 1), (3, 1, 2), (1, 2, 6)] and pieces[1][1][1] is cols[1]
    assert pieces[2] == ([(1, 0, 3)], [None])


def test_coordinate_parallel_in_one_process_is_replicated_generation():
    assert not dist.is_initialized()
    assert generation_strategy("coordinate_parallel") is replicated
    assert generation_strategy("replicated") is replicated


def test_a_table_with_fewer_rows_than_ranks_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="3 rows cannot be cut into 4 .*train.generation=replicated"):
        row_ranges(3, 4)


def test_coordinate_parallel_under_deepspeed_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ConfigError, match="not supported under DeepSpeed.*train.generation=replicated"):
        generation_strategy("coordinate_parallel")
    assert generation_strategy("replicated") is replicated


def test_generation_mode_is_validated_at_load():
    assert load_config(None, ["train.generation=coordinate_parallel"]).train.generation == "coordinate_parallel"
    with pytest.raises(ConfigError, match="train.generation='sharded' is not allowed.*coordinate_parallel"):
        load_config(None, ["train.generation=sharded"])


def test_two_process_training_with_coordinate_parallel_generation_lowers_the_loss(tmp_path):
    """The whole plan in one stage under `accelerate launch` on 2 gloo processes (DDP), each
    rank generating half the rows of every micro-batch's network."""
    cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "launch/train.py"),
           "--config", str(ROOT / "configs/blockwise.yaml"), *TINY, "smoothing.enabled=false",
           "recipe.incremental=false", "recipe.warmup_steps=50", "train.generation=coordinate_parallel",
           f"run_dir={tmp_path}"]  # --multi_gpu: accelerate's torchrun launcher, on CPU too
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert out.returncode == 0, f"training failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert "stage_1: weight generation coordinate-parallel (each of 2 ranks" in out.stdout + out.stderr
    assert (tmp_path / "stage_1" / "COMPLETE").is_file() and (tmp_path / "results.json").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(tmp_path / "tb" / "stage_1"))
    ea.Reload()
    ce = [e.value for e in ea.Scalars("loss/ce")]
    assert len(ce) >= 5 and sum(ce[-2:]) / 2 < sum(ce[:2]) / 2
