#!/usr/bin/env bash
# Lane B of the w050 evidence (commit 6f665fd): the slimmable baseline, then the individually trained networks.
cd /work/exp-6f665fd
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1
R=/work/runs/w050
T=teacher.checkpoint=$R/full/teacher/teacher.pt
( time .venv/bin/python -m neumeta_dist.cli slimmable --config configs/ablations_w050/slimmable.yaml run_dir=$R/slimmable $T ) > $R/logs/slimmable.log 2>&1
( time .venv/bin/python -m neumeta_dist.cli individual --config configs/fashion_mnist_resnet20_w050.yaml --widths 0.5,0.75,0.25 run_dir=$R/individual ) > $R/logs/individual.log 2>&1
