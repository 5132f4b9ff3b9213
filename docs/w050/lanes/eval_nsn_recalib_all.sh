#!/usr/bin/env bash
# The nested_size_noise run re-evaluated with every conv recalibrated (meta.norm=recalib_all;
# commit 4a9d538), on a copy of its run directory: no retraining, evaluation only.
cd /work/main
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1
R=/work/runs/w050
( time .venv/bin/python -m neumeta_dist.cli eval --run $R/nsn_recalib_all meta.norm=recalib_all recipe.name=nested_size_noise_recalib_all run_dir=$R/nsn_recalib_all ) > $R/logs/nsn_recalib_all.log 2>&1
