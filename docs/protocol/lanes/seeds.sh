#!/usr/bin/env bash
# the protocol's five seeds, one after another, from the worktree at 64a4d01
cd /work/ev-64a4d01
for s in 0 1 2 3 4; do
  COMMIT=1 DOCS=/work/main/docs/protocol/results PY=/work/ev-64a4d01/.venv/bin/python \
    launch/protocol_seed.sh $s /work/evruns/runs || echo "seed $s: a row failed"
done
