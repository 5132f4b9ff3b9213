"""`accelerate launch launch/train.py --config configs/<x>.yaml [key=value ...]`"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from neumeta_dist.training.process import exit_skipping_teardown  # noqa: E402
from neumeta_dist.training.pipeline import main  # noqa: E402

if __name__ == "__main__":
    exit_skipping_teardown(lambda: main(sys.argv[1:]))
