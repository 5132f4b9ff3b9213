"""Results that only grow: each evaluation of a run is a file of its own, and the run's
results.json, results.md and plots are a merged view regenerated from all of them.

`<run>/evaluations/<UTC time>-<random>.json` holds one evaluation whole: its rows, the
command, commit, date and config (as results.json always did), plus `evaluation`, how it
evaluated (`samples`, `use_ema`, `calib_samples`, and `network`: which stage — with the
digest of the keys that made it, records/lineage.py — or which `--ckpt` file). Files are never
rewritten, so two evaluations never race on one file, and one that evaluates a single width
loses none of the others.

The merged view: every row of every evaluation, each tagged with its `evaluation`; a width
evaluated the same way twice keeps the newest row, a width evaluated two ways keeps both and
each says which. Evaluations of a network the run no longer holds (a stage retrained by
`--restart-from`) stay on disk, listed as `superseded`, out of the rows. Top-level fields
(teacher, stages, config, command, ...) are the newest current evaluation's; `evaluations`
lists them all. A run evaluated before this existed has its results.json taken in as its
first evaluation file. A lock serialises the merge, not the evaluations.
"""
from __future__ import annotations

import fcntl
import json
import os
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from ..run import RunDir
from . import lineage, scopes

FOLDER = "evaluations"


def folder(run: RunDir) -> Path:
    return run.root / FOLDER


def way(cfg, network: str) -> dict:
    """How an evaluation evaluated: what, besides the width, decides a row's accuracy."""
    e = cfg.eval
    return {"network": network, "samples": e.samples, "use_ema": e.use_ema, "calib_samples": e.calib_samples}


def network_of(run: RunDir, stage: int, ckpt: str | None) -> str:
    """`stage_<k>@<digest of its keys>` for the run's own stage, or the `--ckpt` file."""
    if ckpt is not None:
        return f"ckpt:{ckpt}"
    made_by = lineage.recorded(run, stage)
    return f"stage_{stage}@{made_by['digest'] if made_by else 'unrecorded'}"


def _current(run: RunDir, network: str) -> bool:
    """Whether the run still holds the network an evaluation evaluated."""
    if not network.startswith("stage_"):
        return True
    stage, digest = network[len("stage_"):].split("@")
    return network_of(run, int(stage), None) == network and run.stage_complete(int(stage))


@contextmanager
def _locked(run: RunDir):
    folder(run).mkdir(parents=True, exist_ok=True)
    with open(folder(run) / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _write_new(run: RunDir, record: dict, stamp: str) -> Path:
    path = folder(run) / f"{stamp}-{uuid.uuid4().hex[:8]}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)
    return path


def _adopt_legacy(run: RunDir) -> None:
    """A results.json written before evaluation files existed becomes the first of them."""
    if any(folder(run).glob("*.json")) or not run.results_json.is_file():
        return
    old = json.loads(run.results_json.read_text())
    cfg = old.get("config") or {}
    e, k = cfg.get("eval", {}), old.get("stages_completed", 0)
    made_by = lineage.recorded(run, k)
    # the stage's network if the keys that trained it are the ones this evaluation records
    same = made_by is not None and cfg and made_by["keys"] == scopes.keys_of(cfg, k)
    old["evaluation"] = {"network": f"stage_{k}@{made_by['digest'] if same else 'unrecorded'}",
                         "samples": e.get("samples"), "use_ema": e.get("use_ema"),
                         "calib_samples": e.get("calib_samples")}
    _write_new(run, old, "00000000T000000Z-legacy")


def add(run: RunDir, results: dict, evaluation: dict) -> dict:
    """Write this evaluation's own file, then regenerate and return the merged view."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    with _locked(run):
        _adopt_legacy(run)
        _write_new(run, {**results, "evaluation": evaluation}, stamp)
        return merged(run)


def merged(run: RunDir) -> dict:
    """The run's results as one document: every current evaluation's rows (module docstring)."""
    files = sorted(folder(run).glob("*.json"))  # names start with the UTC time: oldest first
    rows: dict[tuple, dict] = {}
    listed, newest = [], None
    for path in files:
        ev = json.loads(path.read_text())
        how = ev["evaluation"]
        current = _current(run, how["network"])
        listed.append({"file": path.name, "date": ev.get("date"), "command": ev.get("command"),
                       "commit": ev.get("commit"), "widths": [w["width"] for w in ev["widths"]],
                       **how, **({} if current else {"superseded": True})})
        if not current:
            continue
        newest = ev
        for row in ev["widths"]:
            rows[(row["width"], json.dumps(how, sort_keys=True))] = {**row, "evaluation": how}
    if newest is None:
        newest = json.loads(files[-1].read_text()) if files else {"widths": []}
    view = {k: v for k, v in newest.items() if k != "evaluation"}
    view["widths"] = sorted(rows.values(), key=lambda r: (r["width"], r["evaluation"]["network"]))
    view["evaluations"] = listed
    return view
