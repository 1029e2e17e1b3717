"""Rate limiting: token buckets per key (client address, username), in memory.

Limits protect one daemon from abuse; they are not needed for correctness, so each
daemon keeps its own buckets (with N daemons an attacker gets at most N times the rate).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

from imagehost.service.errors import RateLimited

_MAX_KEYS = 100_000


class RateLimit:
    """Allows ``per_minute`` events per key, refilled continuously; 0 disables the limit."""

    def __init__(self, per_minute: int, clock: Callable[[], float], what: str):
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._what = what
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def hit(self, key: str) -> None:
        """Spend one event for ``key``; RateLimited (429) when its bucket is empty."""
        if self._capacity <= 0:
            return
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - last) * self._rate)
        if tokens < 1:
            self._remember(key, tokens, now)
            retry_after = max(1, math.ceil((1 - tokens) / self._rate))
            raise RateLimited(f"Too many {self._what}; retry in {retry_after} s.", retry_after)
        self._remember(key, tokens - 1, now)

    def _remember(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > _MAX_KEYS:
            self._buckets.popitem(last=False)
