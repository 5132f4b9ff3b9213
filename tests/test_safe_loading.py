"""A file handed in from outside a run is read as data: a pickle that would run code is
refused, in one line naming the file, before anything in it runs — at every entry point that
reads such a file (teacher.checkpoint, --ckpt, exported networks, consolidate, CIFAR archives).

The crafted payload opens (creates) a marker file when unpickled; each test asserts the marker
is absent afterwards, and the first test that the payload does create it when loaded the
unsafe way, so a harmless payload cannot make the others pass."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, TINY_RUN_CONFIG, refused_in_one_line, train_tiny_run

from neumeta_dist import checkpoint as ckpt
from neumeta_dist import cli
from neumeta_dist.training import pipeline

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / TINY_RUN_CONFIG)
TINY = TINY_RUN


class _Creates:
    """Unpickling this calls open(marker, "w"): code a data file must not be able to run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_torch_file(path: Path, marker: Path, payload: dict | None = None) -> Path:
    """A torch file whose every other value is a real tensor: only the payload is foreign."""
    torch.save({**(payload or {"weights": torch.zeros(2)}), "x": _Creates(marker)}, path)
    return path


def refused(capsys, entry, argv: list[str], path: Path) -> str:
    """One `error:` line naming `path` and the refusal (conftest.refused_in_one_line)."""
    line = refused_in_one_line(capsys, entry, argv)
    assert str(path) in line and "would run code" in line, line
    return line


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """The smallest real run: a one-epoch teacher and one INR stage of two steps."""
    return train_tiny_run(tmp_path_factory.mktemp("trained") / "run")


@pytest.fixture
def marker(tmp_path) -> Path:
    yield tmp_path / "pwned"
    assert not (tmp_path / "pwned").exists(), "loading the file ran its code"


def test_the_crafted_payload_runs_code_when_unpickled_the_unsafe_way(tmp_path):
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Creates(marker)))  # what an unrestricted unpickler does with it
    assert marker.exists()


def test_load_torch_refuses_a_file_that_needs_code_in_one_line(tmp_path, marker):
    path = evil_torch_file(tmp_path / "evil.pt", marker)
    with pytest.raises(ckpt.UnsafeFileError) as e:
        ckpt.load_torch(path, "teacher checkpoint")
    assert "\n" not in str(e.value) and str(path) in str(e.value) and "open was not an allowed global" in str(e.value)


def test_teacher_checkpoint_that_needs_code_is_refused_before_training(tmp_path, marker, capsys):
    path = evil_torch_file(tmp_path / "evil.pt", marker)
    run_dir = tmp_path / "run"
    refused(capsys, pipeline.main, ["--config", CONFIG, *TINY, f"teacher.checkpoint={path}", f"run_dir={run_dir}"],
            path)
    assert not (run_dir / "teacher" / "teacher.pt").exists()


@pytest.mark.parametrize("command", ["eval", "export"])
def test_ckpt_that_needs_code_is_refused_by_eval_and_export(trained_run, tmp_path, marker, capsys, command):
    final = torch.load(trained_run / "stage_1" / "final.pt", weights_only=True)
    path = tmp_path / "final.pt"
    torch.save({**final, "x": _Creates(marker)}, path)  # a real stage result, plus the payload
    extra = ["--width", "0.5", "--out", str(tmp_path / "net.pt")] if command == "export" else []
    refused(capsys, cli.main, [command, "--run", str(trained_run), "--ckpt", str(path), *extra], path)
    assert not (tmp_path / "net.pt").exists()


def test_exported_network_that_needs_code_is_refused_by_load_exported(trained_run, tmp_path, marker):
    from neumeta_dist.evaluation.export import load_exported
    good = tmp_path / "net.pt"
    cli.main(["export", "--run", str(trained_run), "--width", "0.5", "--out", str(good)])
    assert load_exported(good) is not None  # the real artefact loads as data
    art = torch.load(good, weights_only=True)
    evil = evil_torch_file(tmp_path / "evil_net.pt", marker, art)
    with pytest.raises(ckpt.UnsafeFileError, match="would run code"):
        load_exported(evil)


def test_consolidate_refuses_a_checkpoint_file_that_needs_code(trained_run, tmp_path, marker, capsys):
    source = ckpt.latest_checkpoint(trained_run / "stage_1")
    copy = tmp_path / "run" / "stage_1" / source.name
    shutil.copytree(source, copy)
    ema = evil_torch_file(copy / "ema.pt", marker, torch.load(source / "ema.pt", weights_only=True))
    meta = json.loads((copy / "meta.json").read_text())  # a whole checkpoint by its manifest: only the
    (copy / "meta.json").write_text(json.dumps({**meta, "files": ckpt.manifest(copy)}))  # payload is wrong
    refused(capsys, cli.main, ["consolidate", "--ckpt", str(copy), "--out", str(tmp_path / "c.pt")], ema)
    assert not (tmp_path / "c.pt").exists()


def test_cifar_archive_that_needs_code_is_refused_by_training_and_shards(tmp_path, marker, capsys):
    import numpy as np
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": _Creates(marker)}, fh)
    path = folder / "data_batch_1"
    refused(capsys, pipeline.main, ["--config", CONFIG, *TINY, "data.dataset=cifar10", f"data.root={tmp_path}",
                                    f"run_dir={tmp_path / 'run'}"], path)
    refused(capsys, cli.main, ["shards", "--source", "cifar10", str(folder), "--out", str(tmp_path / "shards")],
            path)


def test_a_real_cifar_archive_layout_still_loads(tmp_path):
    """The restricted reader admits what the official archives hold: arrays, lists, dicts, bytes."""
    import numpy as np

    from neumeta_dist.data.sources import _read_cifar_pickle
    rng = np.random.default_rng(0)
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": [3, 1],
             b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"filenames": [b"a.png", b"b.png"]}
    for protocol in (2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL):
        (tmp_path / "b").write_bytes(pickle.dumps(batch, protocol=protocol))
        got = _read_cifar_pickle(tmp_path / "b")
        assert got[b"labels"] == [3, 1] and np.array_equal(got[b"data"], batch[b"data"])


def test_every_torch_file_a_run_writes_reads_as_data(trained_run):
    """The rule holds for the package's own files: none needs an allow-list to load."""
    ours = [p for p in trained_run.rglob("*.pt")]
    assert {p.name for p in ours} >= {"teacher.pt", "reference.pt", "final.pt", "ema.pt", "sched.pt"}
    for path in ours:
        ckpt.load_torch(path, "run file")


def test_nd_load_refuses_a_stage_result_or_run_file_that_needs_code(trained_run, tmp_path, marker):
    import neumeta_dist as nd
    final = torch.load(trained_run / "stage_1" / "final.pt", weights_only=True)
    evil = tmp_path / "final.pt"
    torch.save({**final, "x": _Creates(marker)}, evil)
    with pytest.raises(ckpt.UnsafeFileError, match="would run code"):
        nd.load(evil)
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    shutil.copy2(evil, copy / "stage_1" / "final.pt")  # a run directory handed over with a doctored stage
    with pytest.raises(ckpt.UnsafeFileError, match="would run code"):
        nd.load(copy).network(width=0.5)
