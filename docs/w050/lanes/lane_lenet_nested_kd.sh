#!/usr/bin/env bash
# NeuMeta's LeNet setting, nested + KD + 1800 cosine steps (commit 2ac31b5), on the nested row's teacher.
cd /work/exp-2ac31b5
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1 PYTHONPATH=/work/exp-2ac31b5
R=/work/runs/lenet
( time .venv/bin/python -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no launch/train.py --config configs/ablations_lenet/nested_kd.yaml run_dir=$R/nested_kd teacher.checkpoint=$R/nested/teacher/teacher.pt ) > $R/logs/nested_kd.log 2>&1
