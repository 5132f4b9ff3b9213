"""`launch/submit.py`: the stage plan as a chain of SLURM jobs, safe to run again.

One job per stage (0 = teacher + smoothing, 1..n = INR stages), each depending `afterok` on
the previous one. The chain's state is `<run_dir>/slurm/jobs.json` (the last job of each
stage) and what the run directory and SLURM say about it; a re-run asks, for each stage:

    complete in the run directory          -> skipped
    its job pending or running (squeue)    -> left alone; the next stage depends on it
    otherwise                              -> submitted; it resumes from its newest checkpoint

so nothing is submitted twice and nothing finished is redone. A stage whose job is gone
without completing is reported with the reason: the error Submitit recorded, or cancelled
(its dependency failed, or `scancel`); `--status` prints the table, `--wait` follows the
chain to its end and exits non-zero naming the failed stage and its log.

Without SLURM (no `sbatch`/`squeue`/`srun` on PATH, or slurmctld not answering), `--dry-run`
still prints every job's #SBATCH lines and command (the states of jobs recorded earlier are
then unknown, and said so); submitting, and `--status` of recorded jobs, stop with one line
saying SLURM is not reachable and what to do.
"""
from __future__ import annotations

import fcntl
import json
import pickle
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from .. import options as opt
from ..checkpoint import atomic_write_text
from ..config import Config, ConfigError, load_config
from ..records import lineage
from ..run import RunDir
from . import snapshot
from .slurm import ROOT, Profile, Rendezvous, StageJob, accelerate_command, load_profile, sbatch_parameters

ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
          "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}


class SubmitError(RuntimeError):
    pass


class SlurmUnreachable(SubmitError):
    def __init__(self, why: str):
        self.why = why
        super().__init__(f"SLURM is not reachable from here ({why}): run launch/submit.py on the cluster's login "
                         "node (or start one: sudo slurm/local/start.sh), or add --dry-run to print the jobs "
                         "without submitting")


def require_slurm(commands: tuple[str, ...] = ("sbatch", "squeue", "srun")) -> None:
    """The SLURM `commands` are on PATH (Submitit itself asks for srun) and slurmctld answers
    `scontrol ping` (instant; sbatch and squeue retry a silent controller for 10-20 s first)."""
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        raise SlurmUnreachable(f"no {', '.join(missing)} on PATH")
    if shutil.which("scontrol") is None:
        return
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise SlurmUnreachable("`scontrol ping` did not answer in 60 s") from None
    if "is UP" not in ping.stdout:  # "Slurmctld(primary) at <host> is UP|DOWN", a line per controller
        first = next((line.strip() for line in (ping.stdout + ping.stderr).splitlines() if line.strip()), "no answer")
        raise SlurmUnreachable(f"scontrol ping: {first}")


@dataclass
class StageState:
    stage: int
    state: str  # COMPLETE | PENDING/RUNNING/... (squeue) | FAILED | CANCELLED | NOT SUBMITTED
    job_id: str = ""
    log: str = ""
    detail: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def failed(self) -> bool:
        """Its job ended and the stage is not complete (failed, cancelled, timed out, ...)."""
        return not self.active and self.state not in ("COMPLETE", "NOT SUBMITTED", "SUBMITTED", "DRY RUN")


class Chain:
    """The jobs of one run directory: `jobs.json` + squeue + the stages' completion markers."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.run = RunDir(cfg.run_dir)
        self.run_dir = self.run.root
        self.folder = self.run.slurm_dir
        self.state_file = self.run.jobs

    def load(self) -> dict:
        if not self.state_file.is_file():
            return {"config_digest": self.cfg.digest(), "stages": {}}
        try:
            state = json.loads(self.state_file.read_text())
        except ValueError as e:
            raise SubmitError(f"{self.state_file} is unreadable ({e}); delete it after checking squeue") from None
        if state.get("config_digest") != self.cfg.digest():
            raise SubmitError(f"{self.run_dir} was submitted with a different config (see {self.state_file}): "
                              f"use the same config and overrides, or another run_dir")
        return state

    def adopt_config(self) -> None:
        """After `--restart-from`: the chain's jobs from now on run this config (the records
        of the earlier jobs stay)."""
        if self.state_file.is_file():
            state = json.loads(self.state_file.read_text())
            self.save({**state, "config_digest": self.cfg.digest()})

    def save(self, state: dict) -> None:
        atomic_write_text(self.state_file, json.dumps(state, indent=1))

    @contextmanager
    def locked(self):
        """One submitter at a time per run directory (two concurrent re-runs must not both submit)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def states(self, stages: range, state: dict | None = None, offline: bool = False) -> list[StageState]:
        """Each stage's state; `offline` (a dry run): without SLURM a recorded job's state is
        UNKNOWN instead of an error."""
        state = self.load() if state is None else state
        jobs = {k: state["stages"].get(str(k), {}) for k in stages}
        try:
            queue = squeue([j["job_id"] for j in jobs.values() if j])
        except SlurmUnreachable as e:
            if not offline:
                raise
            print(f"note: SLURM is not reachable from here ({e.why}): the states of recorded jobs are unknown",
                  file=sys.stderr)
            queue = None
        out = []
        for k in stages:
            job = jobs[k]
            if self.run.stage_complete(k):
                out.append(StageState(k, "COMPLETE", job.get("job_id", ""), job.get("log", "")))
            elif not job:
                out.append(StageState(k, "NOT SUBMITTED"))
            elif queue is None:
                out.append(StageState(k, "UNKNOWN", job["job_id"], job["log"], "SLURM not reachable"))
            else:
                out.append(self._ended_or_queued(k, job, queue.get(job["job_id"])))
        return out

    def _ended_or_queued(self, k: int, job: dict, queued: tuple[str, str] | None) -> StageState:
        """A job not complete: SLURM's state while slurmctld knows it, with Submitit's error if any."""
        jid, log = job["job_id"], job["log"]
        state, reason = queued or ("", "None")
        error = "" if state in ACTIVE else (training_error(Path(log)) or submitit_error(self.folder / "logs", jid))
        detail = error or ("" if reason == "None" else reason)
        return StageState(k, state or ("FAILED" if error else "GONE"), jid, log,
                          detail or ("" if state else "ended without completing or a recorded error"))


def squeue(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """{job id: (state, reason)} for the jobs slurmctld still knows (ended ones for MinJobAge)."""
    if not job_ids:
        return {}
    require_slurm(("squeue",))
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T|%r"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:  # all of them purged: none queued
            return {}
        first = next((line.strip() for line in out.stderr.splitlines() if line.strip()), f"status {out.returncode}")
        raise SlurmUnreachable(f"squeue: {first}")
    rows = (line.split("|") for line in out.stdout.splitlines() if line.count("|") == 2)
    return {jid: (st, reason) for jid, st, reason in rows}


def training_error(log: Path) -> str:
    """The training's own one-line error (`error: ...`, launch/train.py) in the job's stderr."""
    try:
        lines = log.with_suffix(".err").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.removeprefix("error: ") for line in reversed(lines) if line.startswith("error: ")), "")


def submitit_error(folder: Path, job_id: str) -> str:
    """The last line of the error Submitit recorded for task 0 of the job, if it recorded one."""
    path = folder / f"{job_id}_0_result.pkl"
    try:
        outcome, value = pickle.loads(path.read_bytes())
    except (OSError, ValueError, pickle.UnpicklingError, EOFError):
        return ""
    if outcome != "error":
        return ""
    lines = [line for line in str(value).strip().splitlines() if line.strip()]
    return lines[-1] if lines else "error"


def submit(chain: Chain, prof: Profile, config: str, overrides: list[str], stages: range,
           dry_run: bool) -> list[StageState]:
    """Submit every stage of `stages` that is neither complete nor queued; returns the table."""
    import submitit
    if not dry_run:
        require_slurm()
    with nullcontext() if dry_run else chain.locked():
        state = chain.load()
        rows = chain.states(stages, state, offline=dry_run)
        before = chain.states(range(stages.start - 1, stages.start), state, offline=dry_run) if stages.start > 0 else []
        parent = before[0] if before else None
        if parent and parent.state not in ("COMPLETE", "UNKNOWN") and not parent.active:
            raise SubmitError(f"stage {parent.stage} is neither complete nor queued: include it (--stages "
                              f"{parent.stage}:{stages.stop - 1})")
        # made only to submit: Submitit refuses to start where srun is missing, which a dry run must not need
        executor = None if dry_run else submitit.SlurmExecutor(folder=chain.folder / "logs",
                                                               max_num_timeout=prof.max_requeues)
        job_overrides = [o for o in overrides if not o.startswith("run_dir=")] + [f"run_dir={chain.run_dir}"]
        snap = None  # taken once, when the first job is submitted: every job of this submission runs it
        for i, row in enumerate(rows):
            prev = rows[i - 1] if i else parent
            if row.state == "COMPLETE" or row.active:
                continue
            after = prev.job_id if prev is not None and prev.state != "COMPLETE" else None
            if not dry_run:
                snap = snap or snapshot.take(ROOT, chain.cfg, chain.folder / "snapshots")
            params = sbatch_parameters(prof, f"{chain.run_dir.name}-s{row.stage}",
                                       f"afterok:{after}" if after else None, snap.root if snap else ROOT)
            if row.failed and row.state != "UNKNOWN":
                print(f"stage {row.stage}: previous job {row.job_id} {row.state.lower()} ({row.detail}); "
                      "submitting it again", file=sys.stderr)
            if dry_run:
                print_dry_run(chain, prof, params, row.stage, job_overrides)
                rows[i] = StageState(row.stage, "DRY RUN", f"<stage {row.stage} job>", detail=after or "")
                continue
            executor.update_parameters(**params)
            try:  # the snapshot's resolved config: the overrides are in it
                job = executor.submit(StageJob(prof, str(snap.config), row.stage, [], str(chain.run_dir),
                                               str(snap.root)))
            except submitit.core.utils.FailedJobError as e:  # sbatch's own error, e.g. no controller
                first = next((line.strip() for line in str(e).splitlines() if line.strip()), "no reason given")
                raise SubmitError(f"sbatch refused stage {row.stage}: {first}") from None
            record = state["stages"].setdefault(str(row.stage), {})
            if "job_id" in record:  # earlier jobs of this stage, for the record
                record["earlier_jobs"] = [*record.get("earlier_jobs", []), record["job_id"]]
            record.update(job_id=str(job.job_id), log=str(job.paths.stdout), commit=snap.commit, code=str(snap.root))
            chain.save(state)
            rows[i] = StageState(row.stage, "SUBMITTED", str(job.job_id), str(job.paths.stdout),
                                 f"afterok:{after}" if after else "")
    return rows


def print_dry_run(chain: Chain, prof: Profile, params: dict, stage: int, overrides: list[str]) -> None:
    """The job's #SBATCH lines (exactly what Submitit would submit) and its launch command."""
    from submitit.slurm.slurm import _make_sbatch_string
    params = dict(params)
    if "dependency" in params:
        params["dependency"] = f"afterok:<job of stage {stage - 1}>"
    script = _make_sbatch_string(command="", folder=chain.folder / "logs", **params)
    where = Rendezvous(prof.nodes, "$SLURM_NODEID", "<first host of $SLURM_JOB_NODELIST>",  # type: ignore[arg-type]
                       "<20000 + job id % 20000>")
    cmd = accelerate_command(prof, where, ["--config", "<config>", "--stage", str(stage), *overrides])
    print(f"# stage {stage}\n" + "\n".join(line for line in script.splitlines() if line.startswith("#SBATCH"))
          + "\n# each node runs: " + " ".join(cmd) + "\n")


def code_lines(chain: Chain, stages: range) -> str:
    """Which code each stage's last job runs (or ran): the commit and the snapshot folder."""
    recorded = chain.load()["stages"] if chain.state_file.is_file() else {}
    by_code: dict[tuple[str, str], list[str]] = {}
    for k in stages:
        job = recorded.get(str(k), {})
        if "commit" in job:
            by_code.setdefault((job["commit"], job["code"]), []).append(str(k))
    return "\n".join(f"code of stage{'s' if len(ks) > 1 else ''} {','.join(ks)}: commit {commit} (snapshot {code})"
                     for (commit, code), ks in by_code.items())


def table(rows: list[StageState]) -> str:
    head = ("stage", "job", "state", "detail", "log")
    cells = [head] + [(str(r.stage), r.job_id or "-", r.state, r.detail or "-", r.log or "-") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def wait(chain: Chain, stages: range, poll_s: float = 2.0, grace_s: float = 60.0) -> list[StageState]:
    """Follow the chain until no job of it is queued any more, or, after a failure, until its
    dependants are cancelled (at most `grace_s`: a cluster may keep them pending instead)."""
    failed_at = None
    while True:
        rows = chain.states(stages)
        if not any(r.active for r in rows):
            return rows
        if any(r.failed for r in rows):
            failed_at = failed_at or time.monotonic()
            if time.monotonic() - failed_at > grace_s:
                return rows
        time.sleep(poll_s)


def failure_report(rows: list[StageState]) -> str | None:
    bad = next((r for r in rows if r.failed), None) or next((r for r in rows if r.state != "COMPLETE"), None)
    if bad is None:
        return None
    cause = next((r for r in rows if r.state == "FAILED"), bad)
    err = Path(cause.log).with_suffix(".err") if cause.log else None
    return (f"stage {cause.stage} {cause.state.lower()}: {cause.detail or 'no error recorded'}; "
            f"log: {cause.log or '-'}" + (f" (stderr: {err})" if err else "")
            + "".join(f"\nstage {r.stage}: {r.state.lower()}" + (f" ({r.detail})" if r.detail else "")
                      for r in rows if r is not cause and r.state != "COMPLETE"))


def parse_stages(text: str | None, n: int) -> range:
    """'a:b' (inclusive), 'a:' or 'k'; default every stage 0..n."""
    if not text:
        return range(n + 1)
    a, sep, b = text.partition(":")
    try:
        lo, hi = int(a or 0), (int(b) if b else n) if sep else int(a)
    except ValueError:
        raise ConfigError(f"--stages {text!r}: expected a:b, a: or k (stages 0..{n})") from None
    if not 0 <= lo <= hi <= n:
        raise ConfigError(f"--stages {text!r}: the plan has stages 0..{n} (0 = teacher)")
    return range(lo, hi + 1)


def count_stages(cfg: Config) -> int:
    """The INR stages of the plan (what `neumeta-dist plan` prints)."""
    from ..training.context import RunContext  # the data and model code, only when counting
    return len(RunContext.load(cfg).stages)


def main(argv: list[str] | None = None) -> None:
    p = opt.Parser(description="Submit the stage plan as a chain of SLURM jobs (afterok); "
                                            "re-running skips complete stages and queued jobs.")
    p.add_argument("--config", required=True, help="experiment YAML, e.g. configs/demo.yaml")
    p.add_argument("--profile", required=True, help="cluster profile, e.g. slurm/local.yaml")
    p.add_argument("--stages", default=None, help="a:b (inclusive; 0 = teacher), default: all")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print each job's sbatch parameters, submit nothing")
    mode.add_argument("--status", action="store_true", help="print the chain's table, submit nothing")
    p.add_argument("--wait", action="store_true", help="follow the chain to its end; exit 1 if a stage failed")
    p.add_argument("--restart-from", type=opt.count(0), default=None, metavar="K",
                   help="delete stage K's artefacts and every later stage's (0 = the teacher too) before "
                        "submitting, so the chain trains them again (a changed config's way on)")
    p.add_argument("overrides", nargs="*", help="dotted config overrides, passed to every stage")
    args = p.parse_args(argv)
    from ..checkpoint import CheckpointError
    from ..data import DataError  # torch: count_stages loads the data anyway
    from ..run import StageError
    try:
        prof = load_profile(args.profile)
        cfg = load_config(args.config, args.overrides)
        cfg.run_dir = str(Path(cfg.run_dir).resolve())  # jobs may start elsewhere
        chain = Chain(cfg)
        stages = parse_stages(args.stages, count_stages(cfg))
        if args.status:
            rows = chain.states(stages)
        else:
            # a config that changes a finished artefact's keys stops here, not in a job hours later
            lineage.check(cfg, chain.run, args.restart_from)
            if args.restart_from is not None and not args.dry_run:
                with chain.locked():
                    lineage.restart(chain.run, args.restart_from)
                    chain.adopt_config()
            rows = submit(chain, prof, args.config, args.overrides, stages, args.dry_run)
            if not args.dry_run and not any(r.state == "SUBMITTED" for r in rows):
                print("nothing to submit: every stage is complete or queued")
        print(table(rows), flush=True)
        if not args.dry_run and (code := code_lines(chain, stages)):
            print(code, flush=True)
        if args.wait and not args.dry_run:
            rows = wait(chain, stages)
            print(table(rows))
        report = failure_report(rows)
        if report and (args.wait or any(r.failed for r in rows)):
            raise SystemExit(f"error: {report}")
    except (ConfigError, SubmitError, DataError, StageError, CheckpointError) as e:
        raise SystemExit(f"error: {e}") from None
