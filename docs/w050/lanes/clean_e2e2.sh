#!/bin/bash
# Issue 13: the w050 table end to end from a clean clone, timed (set-up, then README's command).
cd /work/clean-e2e2
export OMP_NUM_THREADS=1
echo "start $(date -u)"; s=$(date +%s)
make setup > /work/clean-e2e2-setup.log 2>&1 || { echo "setup FAILED"; exit 1; }
echo "setup: $(( $(date +%s) - s )) s"
time PY=.venv/bin/python launch/evidence_w050.sh runs/w050 300
echo "end $(date -u)"
