#!/usr/bin/env bash
# The LeNet nested_kd run (commit 2ac31b5) re-evaluated at commit 0ba5ecc on copies of its run
# directory, no retraining: 10 merged samples per width, and every conv recalibrated per width.
cd /work/main
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1
R=/work/runs/lenet
cp -r $R/nested_kd $R/nkd_merge10 && cp -r $R/nested_kd $R/nkd_recalib_all
( time .venv/bin/python -m neumeta_dist.cli eval --run $R/nkd_merge10 --samples 10 recipe.name=lenet_nested_kd_merge10 \
    run_dir=$R/nkd_merge10 ) > $R/logs/nkd_merge10.log 2>&1
( time .venv/bin/python -m neumeta_dist.cli eval --run $R/nkd_recalib_all meta.norm=recalib_all \
    recipe.name=lenet_nested_kd_recalib_all run_dir=$R/nkd_recalib_all ) > $R/logs/nkd_recalib_all.log 2>&1
