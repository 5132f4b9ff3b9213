"""`accelerate launch launch/train.py --config configs/<x>.yaml [key=value ...]`"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from neumeta_dist.train import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
