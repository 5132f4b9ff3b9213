#!/usr/bin/env bash
# The nested_size_noise run re-evaluated from its raw INR weights instead of their EMA
# (eval.use_ema=false), every conv recalibrated (commit 4a9d538): evaluation only.
cd /work/main
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1
R=/work/runs/w050
( time .venv/bin/python -m neumeta_dist.cli eval --run $R/nsn_noema meta.norm=recalib_all eval.use_ema=false recipe.name=nested_size_noise_recalib_all_no_ema run_dir=$R/nsn_noema ) > $R/logs/nsn_noema.log 2>&1
