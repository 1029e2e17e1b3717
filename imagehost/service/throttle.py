"""Rate limiting: token buckets per key (client address, username), in the database.

The buckets live in the database so that every daemon and every ``--workers`` process
spends from the same one: N processes do not give a client N times the rate. Limits
guard rare, costly requests (logins hash a password, guest uploads store a file), so a
write per request is cheap next to what it protects.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from imagehost.db import throttle as q
from imagehost.service.errors import RateLimited
from imagehost.service.pools import Pools

_MAX_KEY = 255


class RateLimit:
    """Allows ``per_minute`` events per key, refilled continuously; 0 disables the limit."""

    def __init__(self, pools: Pools, name: str, per_minute: int, clock: Callable[[], float],
                 what: str):
        self._db = pools.db
        self._name = name
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._clock = clock  # wall-clock seconds: shared with other processes
        self._what = what

    async def hit(self, key: str) -> None:
        """Spend one event for ``key``; RateLimited (429) when its bucket is empty."""
        if self._capacity <= 0:
            return
        wait = await self._db.run(q.spend_token, self._name, key[:_MAX_KEY], self._capacity,
                                  self._rate, self._clock())
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise RateLimited(f"Too many {self._what}; retry in {retry_after} s.", retry_after)
