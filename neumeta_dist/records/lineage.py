"""A run directory that knows what made it.

The teacher (`teacher/COMPLETE`, written after reference.pt) and every INR stage
(`stage_<k>/COMPLETE`) record `made_by`: the keys that made them (records/scopes.py), their digest
and the commit of the code that ran. Before a re-run does any work, `check` compares the
resolved config with each finished artefact: a change to a key that made one stops the run
in one line naming the keys, the old and new values and the ways on — a new `run_dir`, or
`--restart-from k`, which deletes artefact k and every later one and trains them again (k
must be at or before the first stale artefact: a later stage would start from a stale one).
Artefacts written before these records existed are compared with the run's config.yaml,
the config of the last run there. Evaluation-only changes are announced and re-evaluated.

Torch-free: it runs before any model code is imported.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..run import COMPLETE, RunDir, StageError, stage_index
from . import provenance, scopes


def record(cfg, artefact: int) -> dict:
    """What `made_by` holds for artefact `artefact` (0 = teacher) trained by `cfg` now."""
    keys = scopes.keys_of(cfg, artefact)
    return {"digest": scopes.digest(keys), "commit": provenance.commit(), "keys": keys}


def marker(run: RunDir, artefact: int) -> Path:
    return (run.teacher_dir if artefact == 0 else run.stage(artefact)) / COMPLETE


def recorded(run: RunDir, artefact: int) -> dict | None:
    """The `made_by` record of a finished artefact (None: none written, an older run)."""
    try:
        return json.loads(marker(run, artefact).read_text() or "{}").get("made_by")
    except (OSError, ValueError):
        return None


def summary(run: RunDir, last: int) -> dict[str, dict | None]:
    """{"0": teacher, "1".."last": stages} → the digest and commit that made each (None:
    finished before records were kept): what results.json says trained its network."""
    out = {}
    for k in range(0, last + 1):
        made_by = recorded(run, k)
        out[str(k)] = None if made_by is None else {"digest": made_by["digest"], "commit": made_by["commit"]}
    return out


def mark_teacher(run: RunDir, cfg) -> None:
    from ..checkpoint import atomic_write_text  # the torch-side writer, only when writing
    atomic_write_text(marker(run, 0), json.dumps({"made_by": record(cfg, 0)}))


def finished(run: RunDir) -> list[int]:
    """The artefacts a run directory holds finished: 0 (teacher + reference), then stages."""
    stages = sorted(k for p in run.root.glob("stage_*") if (k := stage_index(p)) is not None)
    return [k for k in ([0] if run.reference.is_file() else []) + stages if run.stage_complete(k)]


def previous_config(run: RunDir):
    """The config of the last run in this directory (config.yaml), None if it has none."""
    if not run.config.is_file():
        return None
    from ..config import ConfigError, load_config
    try:
        return load_config(run.config, files=False)
    except ConfigError:  # an unreadable old config cannot vouch for anything: the records decide
        return None


def _changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def first_stale(cfg, run: RunDir) -> tuple[int, dict[str, tuple[Any, Any]]] | None:
    """The first finished artefact whose keys differ from `cfg`'s, with the changed keys."""
    previous = None
    for k in finished(run):
        made_by = recorded(run, k)
        if made_by is None:
            previous = previous or previous_config(run)
            if previous is None:
                continue
            old = scopes.keys_of(previous, k)
        else:
            old = made_by["keys"]
        changed = _changes(old, scopes.keys_of(cfg, k))
        if changed:
            return k, changed
    return None


def _name(k: int) -> str:
    return "the teacher (stage 0)" if k == 0 else f"stage {k}"


def check(cfg, run: RunDir, restart_from: int | None) -> None:
    """Refuse, in one line and before any work, a config that would reuse a stale artefact."""
    stale = first_stale(cfg, run)
    if stale is None or (restart_from is not None and restart_from <= stale[0]):
        return
    k, changed = stale
    values = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
    how = (f"--restart-from {restart_from} would keep {_name(k)}, trained with the old values; "
           if restart_from is not None else "")
    raise StageError(f"{run.root}: {_name(k)} is finished and was made with other values ({values}); "
                     f"nothing was run: {how}use a new run_dir=..., or retrain {_name(k)} and every later one "
                     f"with --restart-from {k}")


def restart(run: RunDir, k: int) -> list[Path]:
    """Delete artefact k and every later one (`--restart-from k`); returns what went."""
    doomed = [p for p in run.root.glob("stage_*") if (i := stage_index(p)) is not None and i >= max(k, 1)]
    if k == 0 and run.teacher_dir.exists():
        doomed.append(run.teacher_dir)
    for p in sorted(doomed):
        shutil.rmtree(p)
    return sorted(doomed)


def evaluation_changes(cfg, run: RunDir) -> dict[str, tuple[Any, Any]]:
    """Evaluation-only keys that differ from the last run's (they re-evaluate, nothing retrains)."""
    previous = previous_config(run)
    return {} if previous is None else _changes(scopes.evaluation_keys(previous), scopes.evaluation_keys(cfg))
