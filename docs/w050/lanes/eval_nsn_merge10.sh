#!/usr/bin/env bash
# The nested_size_noise run re-evaluated with NeuMeta's K-sample merge (eval.samples=10: the
# mean of 10 generations at jittered coordinates) and every conv recalibrated (commit 4a9d538).
cd /work/main
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1
R=/work/runs/w050
( time .venv/bin/python -m neumeta_dist.cli eval --run $R/nsn_merge10 meta.norm=recalib_all eval.samples=10 recipe.name=nested_size_noise_recalib_all_merge10 run_dir=$R/nsn_merge10 ) > $R/logs/nsn_merge10.log 2>&1
