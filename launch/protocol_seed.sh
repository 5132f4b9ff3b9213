#!/usr/bin/env bash
# One seed of the evidence protocol (docs/protocol.md): the seed's teacher and its core rows,
# two at a time, each row's results JSON copied to DOCS/seed<SEED>/<row>.json as it finishes.
#
#   launch/protocol_seed.sh SEED RUNS_DIR [key=value ...]
#
# Order: teacher ‖ individual_0.25 → one_stage ‖ (seed 0, once: the slimmable lr search on
# validation) → slimmable ‖ blockwise → two_ends. Re-running it skips every row whose JSON is
# in DOCS and resumes a killed row from its newest checkpoint (teacher and individual: epoch
# ends; INR rows and the slimmable network: every 150 steps). The final split is scored here
# and nowhere else (eval.splits=[val,final]). Run it from a `git worktree` at a fixed commit so
# that the code cannot change under a running seed; DOCS may point into another checkout,
# and COMMIT=1 commits each JSON there as it arrives (only that file).
# Env: DOCS (default: docs/protocol/results of this checkout), S (steps per block, 300),
# TUNE_STEPS (600), LRS (the slimmable lr grid, "0.003 0.01 0.03"), PY (python3), JOBS (2).
set -euo pipefail
SEED=${1:?usage: launch/protocol_seed.sh SEED RUNS_DIR [key=value ...]}
RUNS=${2:?runs dir}
shift 2
cd "$(dirname "$0")/.."
ROOT=$PWD
DOCS=$(realpath -m "${DOCS:-$ROOT/docs/protocol/results}")
RUNS=$(realpath -m "$RUNS")
S=${S:-300}
TUNE_STEPS=${TUNE_STEPS:-600}
LRS=${LRS:-"0.003 0.01 0.03"}
JOBS=${JOBS:-2}
PY=${PY:-python3}
R=$RUNS/seed$SEED
OUT=$DOCS/seed$SEED
TUNING=$DOCS/../tuning
mkdir -p "$R/logs" "$OUT" "$TUNING"
COMMON=(train.seed=$SEED "eval.splits=[val,final]" "$@")
T="teacher.checkpoint=$R/teacher/teacher/teacher.pt"
LABEL="seed $SEED" LOG=""
source launch/protocol_rows.sh

inr() {  # inr NAME: an INR row of configs/protocol/NAME.yaml on the seed's teacher (S steps a block)
  local name=$1 steps=$(( 6 * S ))
  [ "$name" = blockwise ] && steps=$S
  row "$name" "$R/$name/results.json" $LAUNCH --config $P/$name.yaml run_dir="$R/$name" $T train.max_steps=$steps \
    "${COMMON[@]}"
}
slimmable_lr() {  # the lr picked on validation (seed 0 runs the search once; every seed reads it)
  $PY - "$TUNING" <<'EOF'
import json, sys, pathlib
rows = [json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).glob("slimmable_lr*.json"))]
trained = lambda r: [w["by_split"]["val"] for w in r["widths"] if w["kind"] == "trained"]
best = max(rows, key=lambda r: sum(trained(r)) / len(trained(r)))
print(best["config"]["slimmable"]["lr"])
EOF
}
tune() {  # the slimmable lr search: LRS × TUNE_STEPS steps on seed 0's teacher, scored on validation
  local lr
  for lr in $LRS; do
    local name=slimmable_lr$lr
    [ -f "$TUNING/$name.json" ] && continue
    # scored on validation at the trained widths only: the final split is not read for a choice
    $CLI slimmable --config $P/slimmable.yaml --steps $TUNE_STEPS run_dir="$R/$name" $T train.max_steps=$(( 6 * S )) \
      "${COMMON[@]}" slimmable.lr=$lr recipe.name=$name "eval.splits=[val]" "eval.widths=[0.5,0.75,1.0]" \
      >> "$R/logs/$name.log" 2>&1 || { echo "$name: FAILED (see $R/logs/$name.log)"; return 1; }
    cp "$R/$name/results.json" "$TUNING/$name.json"
    [ "${COMMIT:-0}" = 1 ] && git -C "$TUNING" add "$TUNING/$name.json" && \
      git -C "$TUNING" commit -q -m "protocol tuning: $name" -- "$TUNING/$name.json" || true
  done
}

start=$(date +%s)
# 1. the seed's teacher (stage 0: training + smoothing) beside the individually trained 0.25
if [ ! -f "$R/teacher/teacher/reference.pt" ]; then
  $LAUNCH --config $P/base.yaml run_dir="$R/teacher" --stage 0 "${COMMON[@]}" >> "$R/logs/teacher.log" 2>&1 &
  tpid=$!
fi
row individual_0.25 "$R/individual/individual.json" $CLI individual --config $P/base.yaml --widths 0.25 \
  run_dir="$R/individual" "${COMMON[@]}" &
ipid=$!
[ -n "${tpid:-}" ] && { wait $tpid || { echo "seed $SEED teacher: FAILED (see $R/logs/teacher.log)"; exit 1; }; }
echo "seed $SEED teacher: $(( $(date +%s) - start )) s"
# 2. one_stage beside the lr search (seed 0 only, once) or beside the individual network
inr one_stage & opid=$!
if [ "$SEED" = 0 ]; then
  wait $ipid || true
  tune
fi
wait $ipid || true
LR=$(slimmable_lr)
echo "seed $SEED slimmable lr (chosen on validation): $LR"
# 3. the slimmable network beside block-wise, then two_ends in the first free slot
row slimmable "$R/slimmable/results.json" $CLI slimmable --config $P/slimmable.yaml run_dir="$R/slimmable" $T \
  train.max_steps=$(( 6 * S )) slimmable.lr=$LR "${COMMON[@]}" & spid=$!
wait $opid || true
inr blockwise & bpid=$!
wait -n $spid $bpid || true
inr two_ends
wait || true
echo "seed $SEED: $(( $(date +%s) - start )) s"
