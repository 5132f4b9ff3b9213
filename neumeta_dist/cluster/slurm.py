"""SLURM: a cluster profile, the sbatch parameters of a stage job, and the job itself.

A stage job has one task per node. Each task reads the distributed layout from SLURM (nodes,
node rank, the first host of the node list as the main process, a port derived from the job
id) and runs `accelerate launch launch/train.py --stage k` with it, which starts the node's
processes. Submitit carries the job: it pickles a `StageJob`, asks SLURM for SIGUSR2 before
the time limit and requeues the job on it (`StageJob` is Checkpointable: the requeued job
runs the same stage again, and the stage resumes from its newest checkpoint).

This module must stay light to import (no torch): the Submitit process on every node
unpickles `StageJob` before it starts training.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from ..config import (  # the typed loader of the experiment configs
    ConfigError,
    _build,
    check_fields,
    num,
    read_yaml,
)
from ..run import RunDir

ROOT = Path(__file__).resolve().parents[2]  # the checkout whose launch/train.py the jobs run


@dataclass
class Profile:
    """Where and how big a stage job is (slurm/<cluster>.yaml)."""

    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    nodes: int = num(1, ">= 1")
    gpus_per_node: int = num(0, ">= 0")
    # training processes per node; 0 = gpus_per_node (1 without GPUs)
    processes_per_node: int = num(0, ">= 0", "0 = gpus_per_node, 1 without GPUs")
    cpus_per_task: int = num(1, ">= 1")  # one task per node: every CPU the node's processes use
    mem_gb: float = num(0.0, ">= 0", "0 = the partition's default")  # per node
    time_min: int = num(60, ">= 1")  # per job; a stage longer than this is requeued and resumes
    # SIGUSR2 this long before the time limit: the stage checkpoints (and < time_min × 60)
    signal_delay_s: int = num(90, ">= 0")
    max_requeues: int = num(3, ">= 0")  # time-limit requeues of one stage before it is reported failed
    accelerate_args: list[str] = field(default_factory=list)  # e.g. [--config_file, configs/accelerate/zero3.yaml]
    sbatch: list[str] = field(default_factory=list)  # any other sbatch option: "exclusive", "mail-type=END"

    @property
    def per_node(self) -> int:
        return self.processes_per_node or self.gpus_per_node or 1


def load_profile(path: str | Path) -> Profile:
    """The profile, validated like an experiment config: one-line errors naming file, key
    and value. An Accelerate `--config_file` it names must exist (relative to where you submit:
    the jobs start there)."""
    path = Path(path)
    raw = read_yaml(path, "profile", f"profile {path} not found (pass one of slurm/*.yaml, e.g. slurm/local.yaml)")
    if not isinstance(raw, dict):
        raise ConfigError(f"profile {path}: top level must be a mapping of keys, got {type(raw).__name__}")
    prof = _build(Profile, raw, prefix="", source=f"profile {path}")
    check_fields(prof, str(path), "profile")
    args = prof.accelerate_args
    config_file = args[args.index("--config_file") + 1] if "--config_file" in args[:-1] else None
    bad_sbatch = next((o for o in prof.sbatch if not o.partition("=")[0].strip() or o.startswith("-")), None)
    checks = [(prof.signal_delay_s < prof.time_min * 60, "signal_delay_s",
               f"={prof.signal_delay_s}: need < time_min × 60 = {prof.time_min * 60} (the job must run before "
               "it is signalled)"),
              (config_file is None or Path(config_file).is_file(), "accelerate_args",
               f": --config_file {config_file} not found (paths are relative to where you submit from)"),
              (args[-1:] != ["--config_file"], "accelerate_args", ": --config_file needs a file after it"),
              (bad_sbatch is None, "sbatch",
               f": {bad_sbatch!r} is not an sbatch option (write option or option=value without dashes, "
               "e.g. exclusive, mail-type=END)")]
    for ok, key, why in checks:
        if not ok:
            raise ConfigError(f"profile {path}: {key}{why}")
    return prof


def sbatch_parameters(prof: Profile, name: str, dependency: str | None, code: Path = ROOT) -> dict:
    """Submitit's SlurmExecutor parameters of one stage job; `code`: the folder whose package
    the job runs (a chain's snapshot, cluster/snapshot.py)."""
    optional = {"partition": prof.partition, "account": prof.account, "qos": prof.qos,
                "constraint": prof.constraint, "gpus_per_node": prof.gpus_per_node,
                "mem": f"{prof.mem_gb:g}G" if prof.mem_gb else None, "dependency": dependency}
    extra = dict(opt.partition("=")[::2] for opt in prof.sbatch)
    # afterok on a failed stage can never be satisfied: cancel the dependants instead of
    # leaving them pending forever
    extra.setdefault("kill-on-invalid-dep", "yes")
    # the submitted code on the nodes, also where sbatch does not export the environment (first
    # on the path: Submitit unpickles the StageJob with it, before an editable install)
    setup = [f"export PYTHONPATH={code}${{PYTHONPATH:+:$PYTHONPATH}}"]
    return {"job_name": name, "nodes": prof.nodes, "ntasks_per_node": 1, "cpus_per_task": prof.cpus_per_task,
            "time": prof.time_min, "signal_delay_s": prof.signal_delay_s, "setup": setup,
            "additional_parameters": {k: v or True for k, v in extra.items()},
            **{k: v for k, v in optional.items() if v}}


@dataclass(frozen=True)
class Rendezvous:
    """This node's place in the job, from the SLURM environment."""

    nodes: int
    node_rank: int
    main_host: str
    port: int

    @classmethod
    def from_slurm(cls, env: dict | None = None) -> "Rendezvous":
        env = os.environ if env is None else env
        hosts = subprocess.run(["scontrol", "show", "hostnames", env["SLURM_JOB_NODELIST"]], check=True,
                               capture_output=True, text=True).stdout.split()
        # one fixed port per job id: every node computes the same, concurrent jobs differ
        return cls(int(env["SLURM_NNODES"]), int(env["SLURM_NODEID"]), hosts[0],
                   20000 + int(env["SLURM_JOB_ID"]) % 20000)


# the `accelerate launch` options that decide the distributed type themselves
DISTRIBUTED_TYPE_FLAGS = {"--config_file", "--multi_gpu", "--use_deepspeed", "--use_fsdp", "--cpu", "--tpu"}


def accelerate_command(prof: Profile, where: Rendezvous, train_args: list[str], code: Path = ROOT) -> list[str]:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *prof.accelerate_args,
           "--num_machines", str(where.nodes), "--machine_rank", str(where.node_rank),
           "--num_processes", str(where.nodes * prof.per_node),
           "--main_process_ip", where.main_host, "--main_process_port", str(where.port)]
    if where.nodes * prof.per_node > 1 and not DISTRIBUTED_TYPE_FLAGS & set(prof.accelerate_args):
        # torchrun's launcher, with or without GPUs: without a distributed type Accelerate's
        # plain launcher starts one process per node and sets no rank, so every node's
        # process would train alone (seen with 2 CPU nodes); on CPUs the ranks use gloo
        # (distributed/accelerator.py)
        cmd.append("--multi_gpu")
    # --quiet: a stage that fails prints its own one-line error; without it Accelerate's
    # single-process and DeepSpeed launchers add a CalledProcessError traceback after it
    return [*cmd, "--quiet", str(Path(code) / "launch" / "train.py"), *train_args]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class StageFailed(RuntimeError):
    pass


def _shield() -> None:
    """In `accelerate launch`: SLURM signals every process, and Accelerate's single-process
    launcher would die on them, orphaning the training process while it checkpoints. Ignored
    here (inherited through exec); the training process installs its own handlers, and
    torchrun's multi-process agent its own for SIGTERM (it forwards it to the workers)."""
    for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, signal.SIG_IGN)


@dataclass
class StageJob(submitit.helpers.Checkpointable):
    """One stage on this node: `accelerate launch launch/train.py --config C --stage k`."""

    profile: Profile
    config: str
    stage: int
    overrides: list[str]
    run_dir: str
    code: str = str(ROOT)  # the chain's snapshot (cluster/snapshot.py): its launch/train.py and package run

    def __call__(self) -> dict:
        run = RunDir(self.run_dir)
        where = Rendezvous.from_slurm()
        if self.stage > 0 and where.node_rank == 0:  # provenance: the hand-off, by content
            src = run.stage_input(self.stage)
            print(f"stage {self.stage} starts from {src} sha256:{digest(src)}", flush=True)
        cmd = accelerate_command(self.profile, where, ["--config", self.config, "--stage", str(self.stage),
                                                       *self.overrides], Path(self.code))
        print("running", " ".join(cmd), flush=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [self.code, os.environ.get("PYTHONPATH")]))}
        proc = subprocess.Popen(cmd, env=env, preexec_fn=_shield)
        try:
            status = proc.wait()
        finally:  # Submitit exits on the requeue signal: first let the stage write its checkpoint
            proc.wait()
        if not run.stage_complete(self.stage):
            raise StageFailed(f"stage {self.stage} ended with status {status} before it was complete "
                              f"(its error is in this job's log)")
        return {"stage": self.stage, "node_rank": where.node_rank}

