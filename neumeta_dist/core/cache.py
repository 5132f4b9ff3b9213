"""A least-recently-used cache bounded by the bytes it holds, counting what it builds.

For what is built per *set of channel counts* (coordinate tables, segment plans): a
continuous width range has hundreds of such sets (ResNet-18 over widths 0.5–1: 481), a
count-bounded cache of a few dozen then rebuilds nearly every step, and a ResNet-18 table
of 46 MB rules out holding every set. A byte budget holds every set of the small networks
and as many as fit of the large ones; what it drops is rebuilt on the device (core/coords.py).
"""
from __future__ import annotations

import collections
from typing import Callable, Generic, Hashable, TypeVar

V = TypeVar("V")


class BytesCache(Generic[V]):
    def __init__(self, max_bytes: int, nbytes: Callable[[V], int]):
        self.max_bytes, self.nbytes = max_bytes, nbytes
        self._items: collections.OrderedDict[Hashable, tuple[V, int]] = collections.OrderedDict()
        self.held = 0  # bytes of the values held
        self.builds = 0  # values built since the cache was made (a miss builds one)

    def get(self, key: Hashable, build: Callable[[], V]) -> V:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key][0]
        value = build()
        self.builds += 1
        size = self.nbytes(value)
        self._items[key] = (value, size)
        self.held += size
        while self.held > self.max_bytes and len(self._items) > 1:  # the newest always stays
            self.held -= self._items.popitem(last=False)[1][1]
        return value

    def clear(self) -> None:
        self._items.clear()
        self.held = 0

    def __len__(self) -> int:
        return len(self._items)
