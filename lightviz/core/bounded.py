"""A thread-safe LRU cache bounded in entries and in bytes, for objects that are costly to
build and large (models, engines, evaluation data).

`functools.lru_cache` and Streamlit's `st.cache_resource` bound entries only, so a few large
models can still take all the memory of a server; this one weighs each entry when it is
stored and evicts the least recently used entries until both bounds hold again. The newest
entry is never evicted: one object larger than the byte bound is kept alone. Each key is
built once at a time (other threads asking for it wait), and a build that raises stores
nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

__all__ = ["BoundedCache"]

V = TypeVar("V")


class BoundedCache(Generic[V]):
    """LRU of at most `max_entries` values weighing at most `max_bytes` in all.

    Args:
        max_entries: most values kept.
        max_bytes: most bytes kept, as `weigh` counts them.
        weigh: bytes one value holds (called once, when it is stored).

    >>> cache = BoundedCache(max_entries=3, max_bytes=100, weigh=len)
    >>> _ = [cache.get(key, lambda key=key: key * 40) for key in "abc"]  # 40 bytes each
    >>> cache.keys(), cache.nbytes   # "a" was evicted: 120 bytes > 100
    (['b', 'c'], 80)
    """

    def __init__(self, max_entries: int, max_bytes: int, weigh: Callable[[V], int]) -> None:
        if max_entries < 1 or max_bytes < 0:
            raise ValueError(f"max_entries must be >= 1 and max_bytes >= 0; got {max_entries}, {max_bytes}")
        self.max_entries, self.max_bytes, self.weigh = max_entries, max_bytes, weigh
        self._values: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._building: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable, build: Callable[[], V]) -> V:
        """The value cached under `key`, built with `build()` and stored when missing."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key][0]
            key_lock = self._building.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._values:  # another thread built it meanwhile
                    self._values.move_to_end(key)
                    return self._values[key][0]
            try:
                value = build()
            finally:
                with self._lock:
                    self._building.pop(key, None)
            self._store(key, value, int(self.weigh(value)))
            return value

    def _store(self, key: Hashable, value: V, n_bytes: int) -> None:
        with self._lock:
            self._values[key] = (value, n_bytes)
            self._bytes += n_bytes
            while len(self._values) > 1 and (len(self._values) > self.max_entries or self._bytes > self.max_bytes):
                _, (_, old_bytes) = self._values.popitem(last=False)
                self._bytes -= old_bytes

    def peek(self, key: Hashable) -> V | None:
        """The value cached under `key`, or None; does not count as a use."""
        with self._lock:
            entry = self._values.get(key)
        return None if entry is None else entry[0]

    def keys(self) -> list[Hashable]:
        """Cached keys, least recently used first."""
        with self._lock:
            return list(self._values)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._bytes = 0
