#!/usr/bin/env bash
# NeuMeta's LeNet setting, nested recipe (commit 14917a6): teacher + one stage + width sweep.
cd /work/exp-14917a6
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1 PYTHONPATH=/work/exp-14917a6
R=/work/runs/lenet
( time .venv/bin/python -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no launch/train.py --config configs/ablations_lenet/nested.yaml run_dir=$R/nested ) > $R/logs/nested.log 2>&1
