"""Kill an INR stage at seeded random moments, resume it each time, and compare the end with
the uninterrupted run, bit for bit.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/kill_resume.py --kills 20 --seed 0 \\
        --out docs/benchmarks/kill_resume.json

Stage 0 (teacher) is trained once; stage 1 runs uninterrupted into one run directory, then
into another where each launch (`accelerate launch`, 2 gloo processes, as a SLURM job runs
it: the launcher shielded, every process signalled) is killed at a seeded moment with
SIGKILL or SIGTERM (the stage checkpoints at its next step boundary and exits 75) and
relaunched (`train.resume=auto`). Half the moments are seeded times after the launch; the
other half are inside a checkpoint write, found from outside by polling the stage directory
for the temporary `.tmp_checkpoint_<step>` directory (no hook in the product code). After the
last kill the stage runs to its end, and its `final.pt` (INR and EMA) must equal the
uninterrupted run's bit for bit. Writes the kills (signal, moment, whether a write was in
flight, exit status, the checkpoint the relaunch resumed from) and the verdict as JSON.
tests/test_faults.py runs the short form (2 kills).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TERM_GRACE_S = 10  # SLURM's KillWait is 30 s; a step boundary here is a fraction of a second away
SIZES = ["data.dataset=synthetic", "data.train_limit=512", "data.test_limit=64", "data.batch_size=16",
         "data.val_fraction=0.25", "model.width=0.25", "teacher.epochs=1", "meta.generated=last_block",
         "meta.norm=fold", "smoothing.two_opt_rounds=1", "inr.hidden=32", "inr.layers=1", "inr.num_freqs=4",
         "train.widths_per_step=1", "train.warmup_fraction=0", "recipe.warmup_steps=0", "train.save_every=2",
         "train.keep_checkpoints=2", "train.log_every=5", "eval.widths=[1.0]"]


def command(run_dir: Path, nproc: int, steps: int, *args: str) -> list[str]:
    """`accelerate launch` on `nproc` gloo processes; one process runs launch/train.py itself."""
    train = [str(ROOT / "launch/train.py"), "--config", str(ROOT / "configs/blockwise.yaml"), *SIZES,
             f"train.max_steps={steps}", *args, f"run_dir={run_dir}"]
    if nproc == 1:
        return [sys.executable, *train]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(ROOT / "configs/accelerate/ddp.yaml"), "--num_processes", str(nproc), "--mixed_precision", "no",
            "--dynamo_backend", "no", "--quiet", *train]


def _env() -> dict:
    return {**os.environ, "NEUMETA_NO_BAR": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def start(run_dir: Path, nproc: int, steps: int, *args: str) -> subprocess.Popen:
    """A launch as a SLURM job step runs it: the launcher shielded from the signals
    (slurm._shield), the training processes handling them."""
    from neumeta_dist.cluster.slurm import _shield
    log = open(run_dir.parent / f"{run_dir.name}.log", "a")
    return subprocess.Popen(command(run_dir, nproc, steps, *args), stdout=log, stderr=subprocess.STDOUT,
                            env=_env(), cwd=ROOT, start_new_session=True, preexec_fn=_shield)


def run_to_end(run_dir: Path, nproc: int, steps: int, *args: str) -> tuple[float, float | None]:
    """(wall seconds, seconds until its first checkpoint write began) of a launch left alone."""
    t0, first = time.monotonic(), None
    proc = start(run_dir, nproc, steps, *args)
    while proc.poll() is None:
        if first is None and writes(run_dir / "stage_1"):
            first = time.monotonic() - t0
        time.sleep(0.01)
    if proc.returncode != 0:
        raise SystemExit(f"{run_dir}: the launch failed (status {proc.returncode}); see {run_dir}.log")
    return time.monotonic() - t0, first


def writes(stage: Path) -> set[tuple[str, int]]:
    """The checkpoint writes in flight (temporary directories), by name and inode: one a killed
    launch left behind is told from a new write of the same step by its inode."""
    found = set()
    for p in stage.glob(".tmp_checkpoint_*"):
        try:
            found.add((p.name, p.stat().st_ino))
        except FileNotFoundError:  # renamed into place between glob and stat
            pass
    return found


def newest_step(stage: Path) -> int | None:
    from neumeta_dist import checkpoint as ckpt
    with_warnings = ckpt.latest_checkpoint(stage) if stage.is_dir() else None
    return int(with_warnings.name.split("_")[1]) if with_warnings else None


def kill_once(run_dir: Path, nproc: int, steps: int, rng: random.Random, window_s: float,
              plan: tuple[str, str] | None = None) -> dict:
    """One launch, killed at a seeded moment (a time in `window_s`, or inside a checkpoint
    write); `plan` = (signal name, "write" | "time") fixes the draw."""
    stage = run_dir / "stage_1"
    resumed_from = newest_step(stage)
    sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
    during = rng.random() < 0.5
    delay = rng.uniform(0.0, window_s)
    if plan is not None:
        sig, during = signal.Signals[plan[0]], plan[1] == "write"
    stale = writes(stage)  # left by an earlier kill: not this launch's
    t0 = time.monotonic()
    proc = start(run_dir, nproc, steps)
    while proc.poll() is None:
        if (during and writes(stage) - stale) or (not during and time.monotonic() - t0 >= delay):
            break
        time.sleep(0.0005 if during else 0.01)
    at = time.monotonic() - t0
    in_write = bool(writes(stage) - stale)
    if proc.poll() is not None:  # it ended before the moment: the stage is complete
        return {"signal": None, "moment": "write" if during else "time", "at_s": round(at, 3), "missed": True,
                "status": proc.returncode, "resumed_from": resumed_from}
    pids = signal_tree(proc.pid, sig)
    escalated = False
    try:  # SIGTERM: the stage checkpoints at its next step boundary and exits 75
        status = proc.wait(timeout=TERM_GRACE_S)
    except subprocess.TimeoutExpired:  # not ended (signalled before its handler was installed):
        pids |= signal_tree(proc.pid, signal.SIGKILL)  # SLURM's SIGKILL after KillWait
        status, escalated = proc.wait(), True
    reap(pids)
    return {"signal": signal.Signals(sig).name, "moment": "write" if during else "time", "at_s": round(at, 3),
            "in_write": in_write, "status": status, "escalated_to_sigkill": escalated,
            "resumed_from": resumed_from, "newest_after": newest_step(stage)}


def descendants(pid: int) -> set[int]:
    """`pid` and every process under it. torchrun starts each rank in a session of its own, so
    a signal to the launcher's process group misses the ranks; SLURM signals every process of
    the job (its cgroup), and so does this."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p not in found:
            found.add(p)
            todo.extend(children.get(p, []))
    return found


def signal_tree(pid: int, sig: int) -> set[int]:
    pids = descendants(pid)
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    return pids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except OSError:
        return False


def reap(pids: set[int], timeout_s: float = 30.0) -> None:
    """Every process of the launch is gone before the next one starts (a straggling rank would
    write into the run directory beside it): SIGKILL what is left, wait for it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = {p for p in pids if _alive(p)}
        if not alive:
            return
        for p in alive:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    raise SystemExit(f"processes {sorted(alive)} of a killed launch did not end")


def same_result(a: Path, b: Path) -> tuple[bool, float]:
    """(bitwise equal, largest |difference|) of two stage results' INR and EMA tensors."""
    import torch
    x, y = (torch.load(p / "stage_1" / "final.pt", weights_only=True) for p in (a, b))
    pairs = [(x["model"][k], y["model"][k]) for k in x["model"]] + \
            [(x["ema"]["shadow"][k], y["ema"]["shadow"][k]) for k in x["ema"]["shadow"]]
    diff = max((u.double() - v.double()).abs().max().item() for u, v in pairs)
    return all(torch.equal(u, v) for u, v in pairs) and x["model"].keys() == y["model"].keys(), diff


def train_here(run_dir: Path, steps: int, stage: int) -> Path:
    """Stage `stage` in this process, one thread as the launches (the short form in the suite
    saves two launches so)."""
    from neumeta_dist.training import pipeline
    from neumeta_dist.config import load_config
    for key, value in (("NEUMETA_NO_BAR", "1"), ("OMP_NUM_THREADS", "1")):
        os.environ.setdefault(key, value)
    pipeline.run(load_config(ROOT / "configs/blockwise.yaml", [*SIZES, f"train.max_steps={steps}",
                                                               f"run_dir={run_dir}"]), only_stage=stage)
    return run_dir


def kill_chain(run_dir: Path, kills: int, rng: random.Random, window_s: float, nproc: int, steps: int,
               plan: list[tuple[str, str]] | None = None) -> list[dict]:
    """Launch stage 1 of `run_dir` and kill it, `kills` times (fewer if it ends first)."""
    events = []
    for i in range(kills):
        event = kill_once(run_dir, nproc, steps, rng, window_s, plan[i] if plan else None)
        events.append(event)
        print(f"kill {i + 1}/{kills}: {event}", flush=True)
        if event.get("missed"):
            break
    return events


def experiment(work: Path, kills: int, seed: int, nproc: int = 2, steps: int = 200,
               plan: list[tuple[str, str]] | None = None) -> dict:
    """Teacher once; stage 1 uninterrupted; stage 1 killed `kills` times and resumed."""
    teacher = work / "teacher_run"
    teacher.mkdir(parents=True)
    run_to_end(teacher, nproc, steps, "--stage", "0")
    whole, killed = work / "whole", work / "killed"
    for d in (whole, killed):
        shutil.copytree(teacher / "teacher", d / "teacher")
    whole_s, first_write_s = run_to_end(whole, nproc, steps, "--stage", "1")
    # start-up (to the first checkpoint write) and a twentieth of the training after it: every
    # launch is cut short, so twenty of them do not finish the stage
    window = first_write_s + 0.05 * (whole_s - first_write_s)
    t0 = time.monotonic()
    events = kill_chain(killed, kills, random.Random(seed), window, nproc, steps, plan)
    run_to_end(killed, nproc, steps, "--stage", "1")
    equal, diff = same_result(whole, killed)
    landed = [e for e in events if not e.get("missed")]
    return {"kills": len(landed), "sigkill": sum(e["signal"] == "SIGKILL" for e in landed),
            "sigterm": sum(e["signal"] == "SIGTERM" for e in landed),
            "in_checkpoint_write": sum(bool(e.get("in_write")) for e in landed),
            "missed": len(events) - len(landed), "processes": nproc, "steps": steps, "seed": seed,
            "bitwise_equal": equal, "max_abs_diff": diff, "uninterrupted_s": round(whole_s, 1),
            "kill_window_s": round(window, 2),
            "killed_chain_s": round(time.monotonic() - t0, 1), "events": events}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--out", default=None, help="JSON file to write")
    p.add_argument("--work", default=None, help="folder for the runs (default: a new temporary one)")
    args = p.parse_args()
    from neumeta_dist.records import provenance
    work = Path(args.work or tempfile.mkdtemp(prefix="kill_resume_"))
    result = {**experiment(work, args.kills, args.seed, args.processes, args.steps),
              **provenance.record(load_average=os.getloadavg()[0])}
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print({k: v for k, v in result.items() if k != "events"})
    if not result["bitwise_equal"]:
        raise SystemExit("error: the killed and resumed stage differs from the uninterrupted one")


if __name__ == "__main__":
    main()
