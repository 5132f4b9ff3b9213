#!/usr/bin/env bash
# w050 row 'no_incremental_inr128' with train.seed=2 (commit 1d6bb5e), started beside the seed-1 run.
cd /work/exp-1d6bb5e
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1 PYTHONPATH=/work/exp-1d6bb5e
R=/work/runs/w050
( time .venv/bin/python -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no launch/train.py --config configs/ablations_w050/no_incremental_inr128.yaml run_dir=$R/no_incremental_inr128_seed2 teacher.checkpoint=$R/full/teacher/teacher.pt train.max_steps=1800 train.seed=2 recipe.name=no_incremental_inr128_seed2 ) > $R/logs/no_incremental_inr128_seed2.log 2>&1
