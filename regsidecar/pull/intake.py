"""What this host receives from every source, all downloads together: is its link busy?

Pure: the clock is injected, no I/O. A peer response that has sent nothing for
``peers.stall_s`` is silent for one of two reasons. On an idle link the peer is stuck (or
gone without a reset): the part should go to the next holder or the store at once. On a
link that other responses keep full (a scale-up: every part of every blob in flight at
once), the silent response is starved by this host's own traffic: its handshake or first
segments were dropped at a full queue and TCP backs off, 1 s, 2 s, 4 s. Asking anyone else
then adds a request to the same full link, and asking the store adds the very S3 bytes
peer fetch exists to save. So a fetch asks :meth:`Intake.busy` before it gives up on a
silent peer, and waits on (up to ``peers.patience_s``) while the answer is yes.

"Busy" is relative to what this host has shown it can receive: the bytes of the last
``window_s`` are at least ``share`` of the most any ``window_s`` of the recent past held.

>>> t = [0.0]
>>> intake = Intake(now=lambda: t[0])
>>> for _ in range(40):  # 10 s at 1 MB/s
...     intake.add(250_000); t[0] += 0.25
>>> intake.busy(5.0)
True
>>> t[0] += 5.0  # then 5 s of nothing
>>> intake.busy(5.0)
False
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

BUCKET_S = 0.25  # resolution of the record
HISTORY_S = 120.0  # how far back the best window is looked for


class Intake:
    """Bytes received per ``BUCKET_S``, the last ``HISTORY_S`` of them."""

    def __init__(self, *, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._buckets: deque[list[int]] = deque()  # [bucket index, bytes]

    def add(self, n: int) -> None:
        i = int(self._now() / BUCKET_S)
        if self._buckets and self._buckets[-1][0] == i:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([i, n])
            oldest = i - int(HISTORY_S / BUCKET_S)
            while self._buckets[0][0] < oldest:
                self._buckets.popleft()

    def _sums(self, width: int) -> tuple[int, int]:
        """(bytes in the last ``width`` buckets up to now, most in any ``width`` buckets)."""
        now = int(self._now() / BUCKET_S)
        recent = sum(b for i, b in self._buckets if i > now - width)
        best, total, tail = 0, 0, 0
        items = list(self._buckets)
        for i, b in items:
            total += b
            while items[tail][0] <= i - width:
                total -= items[tail][1]
                tail += 1
            best = max(best, total)
        return recent, best

    def busy(self, window_s: float, share: float = 0.5) -> bool:
        """Whether the last ``window_s`` brought at least ``share`` of the most that any
        ``window_s`` did (False before anything was received).

        >>> Intake(now=lambda: 0.0).busy(5.0)
        False
        """
        width = max(1, round(window_s / BUCKET_S))
        recent, best = self._sums(width)
        return best > 0 and recent >= share * best
