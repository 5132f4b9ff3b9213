#!/usr/bin/env bash
# docs/w050/results.md from the uninterrupted clean-clone run (E, commit ba76e2f) and the seed
# rows (R, commit 1d6bb5e, same teacher); run from the repository root.
E=/work/clean-e2e2/runs/w050 R=/work/runs/w050
.venv/bin/neumeta-dist report --runs $E/full $E/no_incremental $E/no_incremental_inr128 $E/neumeta_all_layers $E/slimmable \
  --individual $E/individual/individual.json \
  --seeds "no_incremental_inr128=$E/no_incremental_inr128,$R/no_incremental_inr128_seed1,$R/no_incremental_inr128_seed2" \
  --seeds "no_incremental=$E/no_incremental,$R/no_incremental_seed1" \
  --seeds "slimmable=$E/slimmable,$R/slimmable_seed1" \
  --preamble docs/w050/preamble.md --out docs/w050/results.md
