#!/bin/bash
# Issue 13: make demo's recipe (configs/demo.yaml at 889e738), timed; one thread as CI.
cd /work/exp-889e738
export OMP_NUM_THREADS=1 PYTHONPATH=/work/exp-889e738 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1
( time .venv/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no launch/train.py --config configs/demo.yaml ) > /work/demo-889e738.log 2>&1
