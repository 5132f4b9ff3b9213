"""The data: in-memory datasets (sources.py), WebDataset shards (shards.py) and their stream
(stream.py), the position of a stream in its epochs (position.py), and the one seam the loops
call (loaders.py, re-exported here)."""
from .loaders import ShardSet, eval_batches, load_splits, sample_images, train_batches  # noqa: F401
from .sources import DataError, Splits  # noqa: F401
