#!/bin/bash
# Issue 13, clean-clone run (commit f3c1e29): the no_incremental row, started at 19:46 beside the
# slimmable and full rows instead of after the slimmable one (the session's end was near).
cd /work/clean-e2e
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1
PY=.venv/bin/python
LAUNCH="$PY -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no launch/train.py"
RUNS=runs/w050 A=configs/ablations_w050
t0=$(date +%s)
$LAUNCH --config $A/no_incremental.yaml run_dir=$RUNS/no_incremental teacher.checkpoint=$RUNS/full/teacher/teacher.pt train.max_steps=1800 > $RUNS/logs/no_incremental.log 2>&1 && echo "no_incremental: done" || echo "no_incremental: FAILED"
times > "$RUNS/logs/no_incremental.times"
printf '%s\t%d\t%s\n' no_incremental $(( $(date +%s) - t0 )) \
  "$(awk 'NR == 2 {for (i = 1; i <= 2; i++) {split($i, a, /[ms]/); t += a[1] * 60 + a[2]} printf "%.0f", t}' "$RUNS/logs/no_incremental.times")" >> "$RUNS/times.tsv"
