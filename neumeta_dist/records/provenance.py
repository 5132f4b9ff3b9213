"""Where a result came from: the exact command, the code, the machine and the date.

Every results JSON carries these fields so that a figure can be traced to what made it
(and rerun): the command line as typed (the launcher's too when `accelerate launch` ran
it), the git commit (and whether the tree had uncommitted changes), the machine (host,
cores, accelerator) and the UTC date. Torch-free apart from the accelerator's name.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = "SNAPSHOT.json"  # in a SLURM chain's code snapshot: the commit it was taken at


def command() -> str:
    """This process's command line, the program named as a user types it (`neumeta-dist`,
    `launch/train.py` relative to the checkout), behind `accelerate launch` when it ran it."""
    prog = Path(sys.argv[0])
    if prog.name in ("cli.py", "neumeta-dist"):
        name = "neumeta-dist"
    else:
        try:
            name = str(prog.resolve().relative_to(ROOT))
        except ValueError:
            name = str(prog)
    text = shlex.join([name, *sys.argv[1:]])
    launched = "LOCAL_RANK" in os.environ or "ACCELERATE_MIXED_PRECISION" in os.environ
    return ("accelerate launch " + text) if launched else text


def commit() -> str:
    """HEAD of the checkout the code runs from, `+dirty` when tracked files differ from it;
    for code run from a SLURM chain's snapshot (cluster/snapshot.py), the commit it was taken at —
    git there would find whatever repository holds the run directory."""
    submitted = recorded_commit(ROOT)
    if submitted is not None:
        return submitted
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        head = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def machine() -> str:
    try:
        import torch
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # a broken driver must not lose the results
        gpu = "GPU unknown"
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    return f"{platform.node()}: {os.cpu_count()} cores (OMP_NUM_THREADS={threads}), {gpu}, {platform.machine()}"


def record(**extra) -> dict:
    """The provenance fields of a results JSON (`extra`: run-specific ones, e.g. wall time)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return {"command": command(), "commit": commit(), "machine": machine(),
            "date": now.strftime("%Y-%m-%d %H:%M UTC"), **extra}


def recorded_commit(code_root: Path) -> str | None:
    """The commit a snapshot was taken at (None: `code_root` is not a snapshot; cluster/snapshot.py writes MARKER)."""
    try:
        return json.loads((Path(code_root) / MARKER).read_text())["commit"]
    except (OSError, ValueError, KeyError):
        return None
