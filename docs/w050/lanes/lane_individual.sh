#!/usr/bin/env bash
# w050 evidence: the individually trained networks (commit f15cec7), the teacher's recipe (10 epochs) at 0.25/0.5/0.75.
cd /work/exp-f15cec7
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1
( time .venv/bin/python -m neumeta_dist.cli individual --config configs/fashion_mnist_resnet20_w050.yaml --widths 0.5,0.75,0.25 run_dir=/work/runs/w050/individual ) > /work/runs/w050/logs/individual.log 2>&1
