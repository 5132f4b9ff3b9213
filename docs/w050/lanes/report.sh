#!/usr/bin/env bash
# docs/w050/results.md from the clean-clone run (E, commit f3c1e29) and the earlier seed and
# neumeta_all_layers rows (R); run from the repository root.
E=/work/clean-e2e/runs/w050 R=/work/runs/w050
.venv/bin/neumeta-dist report --runs $E/full $E/no_incremental $E/no_incremental_inr128 $R/neumeta_all_layers $E/slimmable \
  --individual $E/individual/individual.json \
  --seeds "no_incremental_inr128=$E/no_incremental_inr128,$R/no_incremental_inr128_seed1,$R/no_incremental_inr128_seed2" \
  --seeds "no_incremental=$E/no_incremental,$R/no_incremental_seed1" \
  --seeds "slimmable=$E/slimmable,$R/slimmable_seed1" \
  --preamble docs/w050/preamble.md --out docs/w050/results.md
