#!/usr/bin/env bash
# The issue-13 evidence (docs/w050/results.md) in one command: the shared teacher (the
# individually trained networks beside it), then the rows, JOBS at a time, then the table,
# plot and JSONs.
#
#   launch/evidence_w050.sh RUNS_DIR STEPS_PER_STAGE [key=value ...]
#
# Setting: configs/fashion_mnist_resnet20_w050.yaml — ResNet-20 at width 0.5 (8/16/32),
# trained widths 0.5/0.75/1.0, held-out widths between them, 0.25/0.375 outside. Rows: NeuMeta's
# relative coordinates (full), the best recipe (no_incremental_inr128: one stage, 128 × 3 heads),
# it with 64 × 2 heads (no_incremental), naive all-layer NeuMeta, the universally slimmable
# network (same image passes as the pipeline) and the individually trained networks (the
# teacher's recipe) at 0.25/0.5/0.75. Extra overrides apply to every row: on a GPU,
# `model.width=1.0` runs the full 16/32/64 network and STEPS_PER_STAGE=1500 ≈ the authors'
# budget per block. The single-factor changes (nested, nested_size_noise, inr128, inplace_kd,
# kd, cosine, continue_stream: configs/ablations_w050/) run with ROWS="…". JOBS rows run at a
# time (default: cores / OMP_NUM_THREADS); each row's wall and CPU seconds go to
# RUNS/times.tsv. SEEDS="1 2" adds the seed rows of the best INR recipe and the slimmable network.
set -euo pipefail
RUNS=${1:?usage: launch/evidence_w050.sh RUNS_DIR STEPS_PER_STAGE [key=value ...]}
S=${2:?steps per stage}
shift 2
cd "$(dirname "$0")/.."
export NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PY:-python3}
LAUNCH="$PY -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no launch/train.py"
CLI="$PY -m neumeta_dist.cli"
BASE=configs/fashion_mnist_resnet20_w050.yaml
A=configs/ablations_w050
mkdir -p "$RUNS/logs"
T="teacher.checkpoint=$RUNS/full/teacher/teacher.pt"
B="train.max_steps=$S"
B6="train.max_steps=$(( 6 * S ))"
SEEDS=${SEEDS:-}
# The INR rows besides `full` (configs/ablations_w050/<row>.yaml), longest first so the
# slots pack. The default fits 2.5 h on 2 cores; the single-factor ablations of the earlier
# table add ~40 min: ROWS="no_incremental_inr128 neumeta_all_layers inr128 no_incremental
# nested nested_size_noise".
ROWS=${ROWS:-"no_incremental_inr128 neumeta_all_layers no_incremental"}
# Rows at a time: one per OMP_NUM_THREADS cores (on a GPU, JOBS=… shares it among rows).
# (nproc itself honours OMP_NUM_THREADS: asked without it, or JOBS came out 1 on 2 cores)
CORES=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
JOBS=${JOBS:-$(( CORES / OMP_NUM_THREADS > 0 ? CORES / OMP_NUM_THREADS : 1 ))}
: > "$RUNS/times.tsv"
job() {  # job NAME COMMAND...: log in RUNS/logs/NAME.log; wall and CPU seconds in RUNS/times.tsv
  local name=$1 t0 cpu; shift
  t0=$(date +%s)
  "$@" > "$RUNS/logs/$name.log" 2>&1 && echo "$name: done" || echo "$name: FAILED (see $RUNS/logs/$name.log)"
  # `times` line 2: this subshell's children (the row's processes), user and system CPU;
  # written to a file, as a pipe would run it in a fresh subshell with no children
  times > "$RUNS/logs/$name.times"
  cpu=$(awk 'NR == 2 {for (i = 1; i <= 2; i++) {split($i, a, /[ms]/); t += a[1] * 60 + a[2]} printf "%.0f", t}' "$RUNS/logs/$name.times")
  printf '%s\t%d\t%s\n' "$name" $(( $(date +%s) - t0 )) "$cpu" >> "$RUNS/times.tsv"
}
inr_job() {  # inr_job NAME CONFIG_ROW [key=value ...]: an INR row of configs/ablations_w050/
  local name=$1 row=$2 steps=$B; shift 2
  case $row in no_incremental*|neumeta_all_layers) steps=$B6 ;; esac  # one stage: the same total steps
  job $name $LAUNCH --config $A/$row.yaml run_dir="$RUNS/$name" $T $steps "$@"
}
slot() {  # wait for a free slot among JOBS running rows
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
}
start=$(date +%s)
# The individual networks need no teacher: they train beside it.
job teacher $LAUNCH --config $BASE run_dir="$RUNS/full" "$@" --stage 0 & teacher=$!
job individual $CLI individual --config $BASE --widths 0.25,0.5,0.75 run_dir="$RUNS/individual" "$@" &
wait $teacher
echo "teacher: $(( $(date +%s) - start )) s"
slot; job slimmable $CLI slimmable --config $A/slimmable.yaml run_dir="$RUNS/slimmable" $T $B "$@" &
for row in $ROWS; do
  case $row in full|slimmable|individual) continue ;; esac  # run below / above
  slot; inr_job $row $row "$@" &
done
slot; job full $LAUNCH --config $BASE run_dir="$RUNS/full" $B "$@" &
# SEEDS="1 2": the best INR row and the slimmable network again with those seeds (not in the
# 2.5 h budget: ~30 + ~45 CPU-min a seed), tabled as mean ± sd over seed 0 and them
for s in $SEEDS; do
  slot; job slimmable_seed$s $CLI slimmable --config $A/slimmable.yaml run_dir="$RUNS/slimmable_seed$s" $T $B \
    train.seed=$s recipe.name=slimmable_seed$s "$@" &
  slot; inr_job no_incremental_inr128_seed$s no_incremental_inr128 train.seed=$s \
    recipe.name=no_incremental_inr128_seed$s "$@" &
done
wait
echo "rows: $(( $(date +%s) - start )) s"
seeds=()
for r in no_incremental_inr128 slimmable; do
  [ -n "$SEEDS" ] && seeds+=(--seeds "$r=$RUNS/$r$(for s in $SEEDS; do printf ",%s" "$RUNS/${r}_seed$s"; done)")
done
$CLI report --runs $(for r in full $ROWS slimmable; do [ -f "$RUNS/$r/results.json" ] && echo "$RUNS/$r"; done) \
  --individual "$RUNS/individual/individual.json" "${seeds[@]}" --out "$RUNS/table.md"
printf 'total\t%d\t\n' $(( $(date +%s) - start )) >> "$RUNS/times.tsv"
echo "total: $(( $(date +%s) - start )) s"
