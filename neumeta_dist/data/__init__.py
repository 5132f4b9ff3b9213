from .loaders import ShardSet, eval_batches, load_splits, sample_images, train_batches  # noqa: F401
from .sources import DataError, Splits  # noqa: F401
