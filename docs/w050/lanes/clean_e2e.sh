#!/bin/bash
# Issue 13: the w050 table end to end from a clean clone (git clone /work/main /work/clean-e2e at
# commit f3c1e29), timed: set-up, then README's command.
cd /work/clean-e2e
export OMP_NUM_THREADS=1
echo "start $(date -u)"; s=$(date +%s)
make setup > /work/clean-e2e-setup.log 2>&1 || { echo "setup FAILED"; exit 1; }
echo "setup: $(( $(date +%s) - s )) s"
time PY=.venv/bin/python launch/evidence_w050.sh runs/w050 300
echo "end $(date -u)"
