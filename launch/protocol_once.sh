#!/usr/bin/env bash
# The protocol's once-only rows (docs/protocol.md, "Once (seed 0)"), on seed 0's teacher and
# splits, one after another, each JSON copied to DOCS/once/<row>.json as it finishes:
#
#   launch/protocol_once.sh RUNS_DIR [key=value ...]     (RUNS_DIR: protocol_seed.sh's)
#
# - individual_0.5_0.75: individually trained networks at 0.5 and 0.75 (the teacher's recipe);
# - neumeta: the 2025 paper's NeuMeta baseline (configs/protocol/neumeta.yaml);
# - all_layers: every tensor generated, with the recipe's warm-up (configs/protocol/all_layers.yaml);
# - one_stage_samples1: seed 0's one_stage network evaluated without the 10-sample merge
#   (eval.samples=1), on a copy of its run so that the kept row stays as it is.
# The INR rows record `storage` (the INR's parameters and the tensors it keeps fixed) beside
# each width's network. Needs seed 0's teacher (protocol_seed.sh 0) and, for the last row, its
# one_stage run. Same environment and re-run rules as launch/protocol_seed.sh: a kept row is
# skipped, a killed one resumes from its checkpoints; COMMIT=1 commits each JSON in DOCS.
set -euo pipefail
RUNS=${1:?usage: launch/protocol_once.sh RUNS_DIR [key=value ...]}
shift
cd "$(dirname "$0")/.."
ROOT=$PWD
DOCS=$(realpath -m "${DOCS:-$ROOT/docs/protocol/results}")
RUNS=$(realpath -m "$RUNS")
S=${S:-300}
PY=${PY:-python3}
R=$RUNS/seed0
OUT=$DOCS/once
mkdir -p "$R/logs" "$OUT"
COMMON=(train.seed=0 "eval.splits=[val,final]" "$@")
T="teacher.checkpoint=$R/teacher/teacher/teacher.pt"
LABEL=once LOG=once_
source launch/protocol_rows.sh
[ -f "$R/teacher/teacher/teacher.pt" ] || { echo "error: no seed-0 teacher at $R/teacher: run launch/protocol_seed.sh 0 $RUNS first"; exit 1; }

newest_evaluation() {  # this evaluation's own record (the run's results.json merges every evaluation)
  ls "$1"/evaluations/*.json | sort | tail -1
}
samples1() {
  local src=$R/one_stage dst=$R/one_stage_samples1
  [ -f "$src/results.json" ] || { echo "no $src/results.json: seed 0's one_stage first"; return 1; }
  rm -rf "$dst" && cp -r "$src" "$dst"
  $CLI eval --run "$dst" --samples 1 run_dir="$dst" "eval.splits=[val,final]" && \
    cp "$(newest_evaluation "$dst")" "$dst/samples1.json"
}

row one_stage_samples1 "$R/one_stage_samples1/samples1.json" samples1 || true
row individual_0.5_0.75 "$R/individual_once/individual.json" $CLI individual --config $P/base.yaml --widths 0.5,0.75 \
  run_dir="$R/individual_once" "${COMMON[@]}" || true
row neumeta "$R/neumeta/results.json" $LAUNCH --config $P/neumeta.yaml run_dir="$R/neumeta" $T \
  train.max_steps=$(( 6 * S )) "${COMMON[@]}" || true
row all_layers "$R/all_layers/results.json" $LAUNCH --config $P/all_layers.yaml run_dir="$R/all_layers" $T \
  train.max_steps=$(( 6 * S )) "${COMMON[@]}" || true
