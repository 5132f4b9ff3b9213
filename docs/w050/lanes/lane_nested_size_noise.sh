#!/usr/bin/env bash
# w050 evidence row 'nested_size_noise' (commit 5e838ce).
cd /work/exp-5e838ce
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1 PYTHONPATH=/work/exp-5e838ce
R=/work/runs/w050
( time .venv/bin/python -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no launch/train.py --config configs/ablations_w050/nested_size_noise.yaml run_dir=$R/nested_size_noise teacher.checkpoint=$R/full/teacher/teacher.pt ) > $R/logs/nested_size_noise.log 2>&1
