#!/usr/bin/env bash
# The docs/results.md table in one command: shared teachers, then every row in parallel.
#
#   launch/evidence.sh RUNS_DIR STEPS_PER_STAGE [key=value ...]
#
# Rows: the full recipe, the recipe minus each part, NeuMeta's settings, and the individually trained networks; every INR row gets STEPS_PER_STAGE optimiser
# steps per block stage (single-stage rows: 6× that) with the authors' linear lr warm-up over
# the first 40 % of them (train.warmup_fraction), the same teacher (GroupNorm: its own) and data. Extra key=value overrides apply to every row (e.g.
# data.root=...). Rows run concurrently: size OMP_NUM_THREADS so rows × threads ≤ cores.
set -euo pipefail
RUNS=${1:?usage: launch/evidence.sh RUNS_DIR STEPS_PER_STAGE [key=value ...]}
S=${2:?steps per stage}
shift 2
cd "$(dirname "$0")/.."
export NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PY:-python3}
LAUNCH="$PY -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no launch/train.py"
FULL=configs/fashion_mnist_resnet20.yaml
mkdir -p "$RUNS/logs"
T="teacher.checkpoint=$RUNS/full/teacher/teacher.pt"
B="train.max_steps=$S"             # per-block stages
B6="train.max_steps=$(( 6 * S ))"  # single-stage rows: the same total
row() {  # row NAME CONFIG [overrides...]: one training run in the background, log in RUNS/logs
  local name=$1 config=$2; shift 2
  $LAUNCH --config "$config" run_dir="$RUNS/$name" "$@" > "$RUNS/logs/$name.log" 2>&1 \
    && echo "$name: done" || echo "$name: FAILED (see $RUNS/logs/$name.log)"
}
start=$(date +%s)
row full $FULL "$@" --stage 0 & row groupnorm configs/ablations/groupnorm.yaml "$@" --stage 0 & wait
echo "teachers: $(( $(date +%s) - start )) s"
row full $FULL $B "$@" &
row no_sandwich configs/ablations/no_sandwich.yaml $T $B "$@" &
row skipinit configs/ablations/skipinit.yaml $T $B "$@" &
row skipinit_authors configs/ablations/skipinit_authors.yaml $T $B "$@" &
row random_init configs/ablations/random_init.yaml $T $B "$@" &
row no_incremental configs/ablations/no_incremental.yaml $T $B6 "$@" &
row groupnorm configs/ablations/groupnorm.yaml $B "$@" &
row neumeta_last_block configs/ablations/neumeta_last_block.yaml $T $B6 "$@" &
row neumeta_all_layers configs/ablations/neumeta_all_layers.yaml $T $B6 "$@" &
( $PY -m neumeta_dist.cli individual --config $FULL --widths 0.25,0.5,0.75 run_dir="$RUNS/individual" "$@" \
    > "$RUNS/logs/individual.log" 2>&1 && echo "individual: done" || echo "individual: FAILED" ) &
wait
echo "rows: $(( $(date +%s) - start )) s"
# fold: the full run's INR evaluated without recalibration (its training is identical).
rm -rf "$RUNS/fold" && cp -r "$RUNS/full" "$RUNS/fold" && rm -f "$RUNS/fold/results.json"
$PY -m neumeta_dist.cli eval --run "$RUNS/fold" meta.norm=fold recipe.name=fold "$@" > "$RUNS/logs/fold.log" 2>&1
# The table (markdown on stdout and in RUNS/table.md), the plot and each row's JSON beside it.
ROWS="full fold no_sandwich skipinit skipinit_authors random_init no_incremental groupnorm neumeta_last_block neumeta_all_layers"
$PY -m neumeta_dist.cli report --runs $(for r in $ROWS; do echo "$RUNS/$r"; done) \
  --individual "$RUNS/individual/individual.json" --out "$RUNS/table.md" \
  --command "full=train.py --config $FULL $B" \
  --command "fold=neumeta-dist eval --run <copy of full> meta.norm=fold" \
  --command "no_sandwich=train.py --config configs/ablations/no_sandwich.yaml $B" \
  --command "skipinit=train.py --config configs/ablations/skipinit.yaml $B" \
  --command "skipinit_authors=train.py --config configs/ablations/skipinit_authors.yaml $B" \
  --command "random_init=train.py --config configs/ablations/random_init.yaml $B" \
  --command "no_incremental=train.py --config configs/ablations/no_incremental.yaml $B6" \
  --command "groupnorm=train.py --config configs/ablations/groupnorm.yaml $B" \
  --command "neumeta_last_block=train.py --config configs/ablations/neumeta_last_block.yaml $B6" \
  --command "neumeta_all_layers=train.py --config configs/ablations/neumeta_all_layers.yaml $B6"
echo "total: $(( $(date +%s) - start )) s"
