"""Wall time of the tiny 4-job chain (stage 0 + 3 INR stages) on a SLURM cluster, end to end.

    sudo slurm/local/start.sh   # or any cluster: pass its profile
    PYTHONPATH=$PWD .venv/bin/python benchmarks/slurm_chain.py --out /tmp/bench [--profile slurm/local.yaml]

Runs `launch/submit.py --wait` on a fresh run directory with the synthetic sizes of
tests/test_slurm.py and writes `slurm_chain.json` to --out: the total, each job's queue wait
(hand-off latency: from the previous stage's COMPLETE to the job's start) and run time, and
the load average before and after (the figure depends on what else the machine runs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_slurm import TINY  # noqa: E402  the sizes the tests use


def job_times(run_dir: Path, row: dict) -> dict:
    log = Path(row["log"]).read_text()
    start = re.search(r"submitit INFO \((\S+ \S+)\) - Starting", log).group(1)
    start_t = datetime.strptime(start, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    k = int(row["stage"])
    done = run_dir / ("teacher/reference.pt" if k == 0 else f"stage_{k}/COMPLETE")
    return {"stage": k, "job": row["job"], "start": start_t, "end": done.stat().st_mtime}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True, help="directory for slurm_chain.json")
    p.add_argument("--profile", default=str(ROOT / "slurm/local.yaml"))
    args = p.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="slurm_chain_")) / "run"
    env = {**os.environ, "NEUMETA_NO_BAR": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    load_before = os.getloadavg()
    t0 = time.time()
    out = subprocess.run([sys.executable, str(ROOT / "launch/submit.py"), "--config", str(ROOT / "configs/blockwise.yaml"),
                          "--profile", args.profile, "--wait", *TINY, f"run_dir={run_dir}"],
                         capture_output=True, text=True, env=env, timeout=1800, check=False)
    total = time.time() - t0
    print(out.stdout + out.stderr)
    if out.returncode != 0:
        raise SystemExit("the chain failed")
    lines = [re.split(r"\s{2,}", line.strip()) for line in out.stdout.splitlines()]
    rows = [dict(zip(("stage", "job", "state", "detail", "log"), c)) for c in lines if len(c) == 5 and c[0].isdigit()]
    jobs = [job_times(run_dir, r) for r in rows[-4:]]
    prev_end = t0
    for j in jobs:
        j["queue_wait_s"], j["run_s"] = round(j["start"] - prev_end, 2), round(j["end"] - j["start"], 2)
        prev_end = j["end"]
    result = {"benchmark": "slurm_chain", "total_s": round(total, 1), "jobs": jobs, "overrides": TINY,
              "profile": args.profile, "machine": f"{platform.node()} {os.cpu_count()} CPUs",
              "load_before": load_before, "load_after": os.getloadavg(), "date": datetime.now().isoformat()}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "slurm_chain.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("total_s", "load_before", "load_after")}),
          [(j["stage"], j["queue_wait_s"], j["run_s"]) for j in jobs])


if __name__ == "__main__":
    main()
