#!/usr/bin/env bash
# The inr128 run re-evaluated with the adopted evaluation (every conv recalibrated, 10 merged
# samples per width), on a copy of its run directory (commit 5ae45dc): evaluation only.
cd /work/main
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1
R=/work/runs/w050
( time .venv/bin/python -m neumeta_dist.cli eval --run $R/inr128_eval meta.norm=recalib_all eval.samples=10 recipe.name=inr128_recalib_all_merge10 run_dir=$R/inr128_eval ) > $R/logs/inr128_eval.log 2>&1
