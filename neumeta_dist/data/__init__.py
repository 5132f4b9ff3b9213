from .sources import DataError, Splits, load_splits  # noqa: F401
