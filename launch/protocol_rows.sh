# Sourced by launch/protocol_seed.sh and launch/protocol_once.sh: the environment their rows
# run in and the rule every row follows. Before sourcing, the script sets ROOT (the checkout,
# current directory), PY, OUT (where kept JSONs go), R (the seed's run folder), LABEL (how
# messages and commits name the lane, e.g. "seed 3") and LOG (a log-name prefix).
export NEUMETA_NO_BAR=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} PYTHONPATH=$ROOT
LAUNCH="$PY -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no launch/train.py"
CLI="$PY -m neumeta_dist.cli"
P=configs/protocol

keep() {  # keep SRC NAME: the row's JSON into OUT (and committed there with COMMIT=1)
  cp "$1" "$OUT/$2.json"
  if [ "${COMMIT:-0}" = 1 ]; then
    for try in 1 2 3 4 5; do  # another git command may hold the index for a moment
      git -C "$OUT" add "$OUT/$2.json" && git -C "$OUT" commit -q -m "protocol $LABEL: $2 ($(git -C "$ROOT" rev-parse --short HEAD))" -- "$OUT/$2.json" && break
      sleep 5
    done
  fi
}

row() {  # row NAME JSON_IN_RUN COMMAND...: run unless OUT has NAME; log, time, keep the JSON
  local name=$1 json=$2 t0; shift 2
  if [ -f "$OUT/$name.json" ]; then echo "$LABEL $name: in $OUT, skipped"; return 0; fi
  t0=$(date +%s)
  if "$@" >> "$R/logs/$LOG$name.log" 2>&1; then
    keep "$json" "$name"
    printf '%s\t%d\n' "$LOG$name" $(( $(date +%s) - t0 )) >> "$R/times.tsv"
    echo "$LABEL $name: done in $(( $(date +%s) - t0 )) s"
  else
    echo "$LABEL $name: FAILED (see $R/logs/$LOG$name.log)"; return 1
  fi
}
