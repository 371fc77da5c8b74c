"""LRU accounting for the blob cache: pure bookkeeping, no I/O.

>>> idx = LruIndex()
>>> idx.add("a", 10); idx.add("b", 10); idx.touch("a")
>>> idx.plan(max_bytes=15, free_bytes=10**9, min_free_bytes=0, low_watermark=1.0)
['b']

Order is access order (least recent first). Pinned keys (a response is reading the file, or a
download is writing it) are never chosen for eviction.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable


class LruIndex:
    """Sizes of cached entries in least-recently-used order, with pins."""

    def __init__(self) -> None:
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._pins: Counter[str] = Counter()
        self.total = 0

    def __len__(self) -> int:
        return len(self._sizes)

    def __contains__(self, key: object) -> bool:
        return key in self._sizes

    def keys(self) -> Iterable[str]:
        return self._sizes.keys()

    def size_of(self, key: str) -> int | None:
        return self._sizes.get(key)

    def add(self, key: str, size: int) -> None:
        """Record (or re-record) ``key`` as the most recently used entry."""
        self.remove(key)
        self._sizes[key] = size
        self.total += size

    def touch(self, key: str) -> bool:
        if key not in self._sizes:
            return False
        self._sizes.move_to_end(key)
        return True

    def remove(self, key: str) -> int:
        size = self._sizes.pop(key, None)
        if size is None:
            return 0
        self.total -= size
        return size

    def pin(self, key: str) -> None:
        self._pins[key] += 1

    def unpin(self, key: str) -> None:
        self._pins[key] -= 1
        if self._pins[key] <= 0:
            del self._pins[key]

    def evictable(self) -> int:
        """Bytes that eviction could free now (everything not pinned)."""
        return self.total - sum(self._sizes.get(k, 0) for k in self._pins)

    def pinned(self, key: str) -> bool:
        return key in self._pins

    def plan(
        self,
        *,
        max_bytes: int,
        free_bytes: int,
        min_free_bytes: int,
        incoming: int = 0,
        low_watermark: float = 0.9,
        trim: bool = False,
    ) -> list[str]:
        """Keys to evict so that ``incoming`` more bytes fit under both limits.

        Nothing is evicted until a limit would be crossed; then entries go, least recently used
        first, until the cache is back under ``low_watermark * max_bytes`` (and the disk has
        ``min_free_bytes`` free), so eviction runs in batches rather than on every write.
        ``trim=True`` goes down to the low watermark even when no limit is crossed yet (an
        operator's ``cache gc``).
        """
        over_size = self.total + incoming - max_bytes
        over_disk = min_free_bytes - (free_bytes - incoming)
        if over_size <= 0 and over_disk <= 0 and not trim:
            return []
        need = max(self.total + incoming - int(max_bytes * low_watermark), over_disk)
        victims: list[str] = []
        freed = 0
        for key, size in self._sizes.items():
            if freed >= need:
                break
            if key in self._pins:
                continue
            victims.append(key)
            freed += size
        return victims
