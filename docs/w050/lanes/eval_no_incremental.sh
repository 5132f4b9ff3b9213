#!/usr/bin/env bash
# The no_incremental run re-evaluated with every conv recalibrated + 10 merged samples, on a
# copy of its run directory (commit 04a6de4): evaluation only.
cd /work/exp-d578d50
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1 PYTHONPATH=/work/exp-d578d50
R=/work/runs/w050
( time .venv/bin/python -m neumeta_dist.cli eval --run $R/no_incremental_eval meta.norm=recalib_all eval.samples=10 recipe.name=no_incremental_recalib_all_merge10 run_dir=$R/no_incremental_eval ) > $R/logs/no_incremental_eval.log 2>&1
