"""`python launch/submit.py --config configs/<x>.yaml --profile slurm/<cluster>.yaml [--stages a:b]
[--dry-run | --status] [--wait] [key=value ...]`: the stage plan as a chain of SLURM jobs."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from neumeta_dist.cluster.submit import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
