#!/usr/bin/env bash
# The slimmable baseline again with train.seed=1 (commit 1d6bb5e): the seed-to-seed spread of the baseline.
cd /work/exp-1d6bb5e
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1 PYTHONPATH=/work/exp-1d6bb5e
R=/work/runs/w050
( time .venv/bin/python -m neumeta_dist.cli slimmable --config configs/ablations_w050/slimmable.yaml run_dir=$R/slimmable_seed1 teacher.checkpoint=$R/full/teacher/teacher.pt train.seed=1 recipe.name=slimmable_seed1 ) > $R/logs/slimmable_seed1.log 2>&1
