#!/usr/bin/env bash
# w050 evidence row 'nested' (commit f15cec7): waits for the shared teacher, then every stage + the width sweep.
cd /work/exp-f15cec7
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1 PYTHONPATH=/work/exp-f15cec7
R=/work/runs/w050
while [ ! -f $R/full/teacher/reference.pt ]; do sleep 20; done
( time .venv/bin/python -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no launch/train.py --config configs/ablations_w050/nested.yaml run_dir=$R/nested teacher.checkpoint=$R/full/teacher/teacher.pt ) > $R/logs/nested.log 2>&1
