#!/bin/bash
# Issue 13, clean-clone run (commit f3c1e29), continued: launch/evidence_w050.sh at f3c1e29 ran
# its rows one at a time (JOBS = nproc / OMP_NUM_THREADS, and nproc honours OMP_NUM_THREADS=1:
# fixed after), so at 18:57 it was stopped with teacher + individual done and slimmable running
# (left to finish); the rows below are the script's own commands, two at a time beside it.
# Not re-run (session time): nested, nested_size_noise, inr128, neumeta_all_layers — their rows
# stay on docs/w050/earlier/results.md.
cd /work/clean-e2e
export OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1
PY=.venv/bin/python
LAUNCH="$PY -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no launch/train.py"
RUNS=runs/w050 A=configs/ablations_w050 BASE=configs/fashion_mnist_resnet20_w050.yaml
T="teacher.checkpoint=$RUNS/full/teacher/teacher.pt"
row() {  # row NAME COMMAND...: log, and wall / CPU seconds in times.tsv
  local name=$1 t0=$(date +%s); shift
  "$@" > "$RUNS/logs/$name.log" 2>&1 && echo "$name: done" || echo "$name: FAILED"
  times > "$RUNS/logs/$name.times"
  printf '%s\t%d\t%s\n' "$name" $(( $(date +%s) - t0 )) \
    "$(awk 'NR == 2 {for (i = 1; i <= 2; i++) {split($i, a, /[ms]/); t += a[1] * 60 + a[2]} printf "%.0f", t}' "$RUNS/logs/$name.times")" >> "$RUNS/times.tsv"
}
( row no_incremental_inr128 $LAUNCH --config $A/no_incremental_inr128.yaml run_dir=$RUNS/no_incremental_inr128 $T train.max_steps=1800
  row full $LAUNCH --config $BASE run_dir=$RUNS/full train.max_steps=300 ) &
( while kill -0 18378 2>/dev/null; do sleep 10; done
  row no_incremental $LAUNCH --config $A/no_incremental.yaml run_dir=$RUNS/no_incremental $T train.max_steps=1800 ) &
wait
echo "rows done $(date -u)"
