#!/usr/bin/env bash
# w050 evidence row 'cosine' (commit 54f9fcd), evaluated as the adopted evaluation: every conv
# recalibrated, 10 merged samples per width.
cd /work/exp-54f9fcd
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1 PYTHONPATH=/work/exp-54f9fcd
R=/work/runs/w050
( time .venv/bin/python -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no launch/train.py --config configs/ablations_w050/cosine.yaml run_dir=$R/cosine teacher.checkpoint=$R/full/teacher/teacher.pt meta.norm=recalib_all eval.samples=10 ) > $R/logs/cosine.log 2>&1
