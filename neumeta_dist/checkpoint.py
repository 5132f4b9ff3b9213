"""Atomic checkpoints and stage markers.

A checkpoint is written under a temporary name and renamed into place only after every file
in it is fsynced, so a reader sees a whole checkpoint or none. `meta.json` is written last
inside it and lists every other file with its size and CRC-32: a directory without a
readable one, or whose files no longer match it (truncated or corrupted later, e.g. by a
full disk or a copy cut short), is skipped with a warning naming it and the next older
checkpoint is used. Ranks write their own shards (DeepSpeed); the main process writes the
manifest, so the run directory must be on a filesystem every rank sees.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable

import torch

from .run import CHECKPOINT_GLOB, COMPLETE, META, checkpoint_dir


class CheckpointError(RuntimeError):
    pass


class UnsafeFileError(CheckpointError):
    """A file whose pickle names code to run (a class or function outside torch's data-only
    allow-list): refused before anything in it executes."""


def fsync_tree(path: Path) -> None:
    for root, _, files in os.walk(path):
        for f in files:
            with open(Path(root) / f, "rb") as fh:
                os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def manifest(ckpt: Path) -> dict[str, list[int]]:
    """{relative path: [size, crc32]} of every file under `ckpt` but meta.json."""
    files = sorted(p for p in ckpt.rglob("*") if p.is_file() and p.name != META)
    return {str(p.relative_to(ckpt)): [p.stat().st_size, _crc32(p)] for p in files}


def _atomic_write(path: Path, mode: str, write: Callable[[Any], None]) -> None:
    """`write(fh)` to a temporary name beside `path`, fsync, rename: a reader sees the old
    file or the whole new one. A write that fails (a full disk) removes the temporary file
    and stops in one line; the old file is untouched."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"{path} could not be written ({_first_line(e)}; {_free(path.parent)}): "
                              "the previous version is untouched") from None


def _first_line(e: Exception) -> str:
    text = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _free(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free:,} bytes free there"
    except OSError:
        return "free space unknown"


def atomic_torch_save(obj: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, "wb", lambda fh: torch.save(obj, fh))


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(Path(path), "w", lambda fh: fh.write(text))


# torch's weights-only refusal is a paragraph; its one informative sentence names the global
_REFUSAL = re.compile(r"WeightsUnpickler error: (.*?)(?: Please use| Check the|\n|$)")


def load_torch(path: Path, what: str, mmap: bool = False) -> Any:
    """torch.load of data only (`weights_only=True`), with a one-line error naming the file
    when it is missing, corrupt, or needs code to load.

    The one rule for every file this package reads: tensors, numbers, strings, lists, tuples
    and dicts, nothing else. A teacher from a model zoo, an exported network, a `--ckpt` or
    a file copied from another machine is a pickle, and a pickle can call anything (its
    `__reduce__`); torch's weights-only unpickler admits only data, so the payloads written
    here hold only data (family as a dict, config as a dict) and nothing needs allow-listing.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            raise UnsafeFileError(refusal(path, what, str(e))) from None
        raise CheckpointError(_unreadable(path, what, e)) from None
    except Exception as e:  # truncated zip, wrong format, ...
        raise CheckpointError(_unreadable(path, what, e)) from None


def refusal(path: Path, what: str, detail: str) -> str:
    """The one line that refuses a file needing code to load."""
    m = _REFUSAL.search(detail)
    why = (m.group(1) if m else detail.strip().splitlines()[0]).strip().rstrip(".")
    return (f"{what} {path} refused: loading it would run code ({why}); this package reads files as data "
            "only (tensors, numbers, strings, lists, dicts): re-save it as a plain state dict")


def _unreadable(path: Path, what: str, e: Exception) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return (f"{what} {path} is unreadable ({type(e).__name__}: {first}); "
            "delete it and re-run the stage that writes it")


def save_state(accelerator, stage_dir: Path, step: int, meta: dict, extra: dict[str, Any]) -> Path:
    """accelerator.save_state + extra torch objects + meta.json, all or nothing: a write that
    fails (a full disk) removes the partial checkpoint and stops in one line naming it and
    the newest whole one, which is untouched and where a relaunch resumes."""
    try:
        return _save_state(accelerator, stage_dir, step, meta, extra)
    except Exception as e:  # torch.save: RuntimeError, safetensors: SafetensorError, open(): OSError
        if not (isinstance(e, CheckpointError) or _disk_error(e, stage_dir)):  # ours: an atomic write inside failed
            raise
        shutil.rmtree(checkpoint_dir(stage_dir, step, tmp=True), ignore_errors=True)
        whole = next((c.name for c in reversed(checkpoints(stage_dir)) if problem(c) is None), None)
        raise CheckpointError(f"checkpoint {checkpoint_dir(stage_dir, step)} could not be written "
                              f"({_first_line(e)}; {_free(stage_dir)}): the partial one is removed, "
                              + (f"{whole} is the newest whole checkpoint and is untouched: free space and "
                                 "relaunch to resume from it" if whole else "no earlier checkpoint: free space "
                                 "and relaunch")) from None


# How torch's writer (PyTorchStreamWriter over a C++ stream) and safetensors say a write failed
_WRITE_FAILED = ("write", "no space", "quota", "iostream error", "unexpected pos", "os error")


def _disk_error(e: Exception, folder: Path) -> bool:
    """A failed write (ENOSPC, EIO, quota), not a bug that happened to raise inside a save.
    torch's C++ writer loses the errno ("basic_ios::clear: iostream error"), so a filesystem
    with (almost) no room left counts too."""
    if isinstance(e, OSError) or any(w in str(e).lower() for w in _WRITE_FAILED):
        return True
    try:
        return shutil.disk_usage(folder).free < (64 << 20)
    except OSError:
        return False


def _save_state(accelerator, stage_dir: Path, step: int, meta: dict, extra: dict[str, Any]) -> Path:
    final, tmp = checkpoint_dir(stage_dir, step), checkpoint_dir(stage_dir, step, tmp=True)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    # Every rank writes its own RNG file (random_states_<rank>.pkl) last, with no barrier
    # after it: the main process must not take the manifest or rename the directory before the
    # slowest rank has written (a race seen on a loaded machine: rank 1 found no directory).
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for name, obj in extra.items():
            torch.save(obj, tmp / f"{name}.pt")
        fsync_tree(tmp)
        atomic_write_text(tmp / META, json.dumps({**meta, "step": step, "files": manifest(tmp)}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        fsync_dir(stage_dir)
    accelerator.wait_for_everyone()
    return final


def read_meta(ckpt: Path) -> dict | None:
    try:
        return json.loads((ckpt / META).read_text())
    except (OSError, ValueError):
        return None


def problem(ckpt: Path) -> str | None:
    """Why `ckpt` cannot be resumed from (None: it is whole)."""
    meta = read_meta(ckpt)
    if meta is None:
        return f"no readable {META}"
    for rel, (size, crc) in meta.get("files", {}).items():
        f = ckpt / rel
        if not f.is_file():
            return f"{rel} is missing"
        if f.stat().st_size != size:
            return f"{rel} has {f.stat().st_size} bytes, {size} were written"
        if _crc32(f) != crc:
            return f"{rel} does not match its checksum"
    return None


def checkpoints(stage_dir: Path) -> list[Path]:
    """Checkpoint directories of a stage, oldest first (whole or not)."""
    return sorted(stage_dir.glob(CHECKPOINT_GLOB)) if stage_dir.is_dir() else []


def latest_checkpoint(stage_dir: Path) -> Path | None:
    """Newest whole checkpoint; truncated or corrupt ones are reported and skipped."""
    for ckpt in reversed(checkpoints(stage_dir)):
        why = problem(ckpt)
        if why is None:
            return ckpt
        warnings.warn(f"skipping checkpoint {ckpt}: {why}; delete it to silence this")
    return None


def named_checkpoint(path: Path) -> Path:
    """A checkpoint the user named (train.resume=<dir>): whole, or a one-line error."""
    if not path.is_dir():
        raise CheckpointError(f"train.resume={path}: no such checkpoint directory (pass a stage_<k>/checkpoint_<step> "
                              "directory, auto or none)")
    why = problem(path)
    if why is not None:
        raise CheckpointError(f"train.resume={path}: unusable checkpoint ({why}); name another one or use auto")
    return path


def prune(stage_dir: Path, keep: int) -> None:
    complete = [c for c in checkpoints(stage_dir) if read_meta(c) is not None]
    for old in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def is_complete(stage_dir: Path) -> bool:
    return (stage_dir / COMPLETE).is_file()


def mark_complete(stage_dir: Path, info: dict) -> None:
    atomic_write_text(stage_dir / COMPLETE, json.dumps(info))


def complete_info(stage_dir: Path) -> dict:
    """What a stage's COMPLETE marker records (steps, held-out accuracy, wall time)."""
    return json.loads((stage_dir / COMPLETE).read_text() or "{}")
