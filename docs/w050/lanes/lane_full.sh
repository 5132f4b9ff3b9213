#!/usr/bin/env bash
# w050 evidence row 'full' (commit 93a174a): waits for the shared teacher, then every stage + the width sweep.
cd /work/exp-93a174a
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1 PYTHONPATH=/work/exp-93a174a
R=/work/runs/w050
while [ ! -f $R/full/teacher/reference.pt ]; do sleep 20; done
T=""; [ full != full ] && T=teacher.checkpoint=$R/full/teacher/teacher.pt
( time .venv/bin/python -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no launch/train.py --config configs/fashion_mnist_resnet20_w050.yaml run_dir=$R/full $T ) > $R/logs/full.log 2>&1
