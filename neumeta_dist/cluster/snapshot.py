"""The code and the resolved config a SLURM chain runs, taken once at submission.

A chain's jobs start minutes or days after `launch/submit.py` returns; reading the checkout
and the config file when each job starts would run whatever they hold by then. So a
submission copies the package and the launchers (`neumeta_dist/`, `launch/`: tracked files
with their uncommitted changes, and untracked files git does not ignore) and writes the
resolved config beside them, into `<run>/slurm/snapshots/<UTC time>-<commit>/`; every job
of the chain puts that folder first on PYTHONPATH and runs its `launch/train.py` with its
`config.yaml`. Uncommitted changes are included and recorded: `SNAPSHOT.json` says
`<commit>+dirty`, lists the untracked files, and `uncommitted.diff` holds `git diff HEAD`.
provenance.commit() reads SNAPSHOT.json when the code runs from a snapshot, so stage
records and results name the commit that was submitted.

Torch-free (runs on the login node).
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..records.provenance import MARKER

CODE = ("neumeta_dist", "launch")


@dataclass(frozen=True)
class Snapshot:
    root: Path
    commit: str

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"


def _git(checkout: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise OSError(out.stderr.strip().splitlines()[0] if out.stderr.strip() else f"git {args[0]} failed")
    return out.stdout


def _files(checkout: Path) -> tuple[list[str], str, list[str], str]:
    """(files to copy, HEAD, untracked files among them, diff of tracked changes) — without
    git (an unpacked release), every file under CODE and commit `unknown`."""
    try:
        head = _git(checkout, "rev-parse", "HEAD").strip()
        files = _git(checkout, "ls-files", "-co", "--exclude-standard", "--", *CODE).splitlines()
        untracked = _git(checkout, "ls-files", "-o", "--exclude-standard", "--", *CODE).splitlines()
        diff = _git(checkout, "diff", "HEAD", "--", *CODE)
    except OSError:
        files = [str(p.relative_to(checkout)) for d in CODE for p in (checkout / d).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts]
        return files, "unknown", [], ""
    return files, head, untracked, diff


def take(checkout: Path, cfg, parent: Path) -> Snapshot:
    """Copy the code of `checkout` and write `cfg` (resolved) into a new folder under `parent`."""
    from ..config import save_config
    files, head, untracked, diff = _files(checkout)
    commit = head + ("+dirty" if diff or untracked else "")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    root = parent / f"{stamp}-{head[:12]}"
    tmp = root.with_name(f".{root.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel in files:
        src = checkout / rel
        if src.is_file():  # a tracked file deleted in the working tree is not part of it
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tmp / rel)
    if diff:
        (tmp / "uncommitted.diff").write_text(diff)
    save_config(cfg, tmp / "config.yaml")
    (tmp / MARKER).write_text(json.dumps({"commit": commit, "head": head, "untracked": untracked,
                                          "uncommitted_diff": bool(diff), "source": str(checkout),
                                          "taken": stamp}, indent=1))
    os.replace(tmp, root)
    return Snapshot(root, commit)
