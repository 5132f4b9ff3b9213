#!/usr/bin/env bash
# the protocol's once rows, from the worktree at c0e86d9 (seed 0's teacher and one_stage run)
cd /work/ev-once-c0e86d9
COMMIT=1 DOCS=/work/main/docs/protocol/results PY=/work/ev-64a4d01/.venv/bin/python \
  launch/protocol_once.sh /work/evruns/runs
