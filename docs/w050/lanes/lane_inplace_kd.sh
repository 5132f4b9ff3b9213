#!/usr/bin/env bash
# w050 evidence row 'inplace_kd' (commit f15cec7).
cd /work/exp-f15cec7
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1 PYTHONPATH=/work/exp-f15cec7
R=/work/runs/w050
( time .venv/bin/python -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no launch/train.py --config configs/ablations_w050/inplace_kd.yaml run_dir=$R/inplace_kd teacher.checkpoint=$R/full/teacher/teacher.pt ) > $R/logs/inplace_kd.log 2>&1
