#!/usr/bin/env bash
# w050 evidence row 'no_incremental' (commit a3d3ac0): one stage of 6 × 300 steps.
cd /work/exp-a3d3ac0
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1 PYTHONPATH=/work/exp-a3d3ac0
R=/work/runs/w050
( time .venv/bin/python -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no launch/train.py --config configs/ablations_w050/no_incremental.yaml run_dir=$R/no_incremental teacher.checkpoint=$R/full/teacher/teacher.pt train.max_steps=1800 ) > $R/logs/no_incremental.log 2>&1
