"""The process-wide request rate limit for one Autopilot API key.

A sliding-window log: a request may start only when fewer than `limit` starts lie in the last
`window_s` seconds, and starts are taken one at a time in arrival order (FIFO). So no half-open
window of `window_s` ever holds more than `limit` starts, by construction.

`limit` is `floor(rate)` per second (a rate below 1 becomes one start per `1/rate` seconds), and
the window is widened by `margin_s`: the server counts arrivals, not starts, and two requests'
transit times may differ. Any `limit + 1` starts span at least `1 + margin_s` seconds, so their
arrivals span at least one second while transit jitter stays under the margin.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(self, rate: float, *, margin_s: float = 0.05) -> None:
        if not rate > 0:
            raise ValueError("rate must be positive")
        self.limit = max(1, math.floor(rate))
        self.window_s = max(1.0, 1.0 / rate) + margin_s
        self.waited_s = 0.0
        """Cumulative seconds callers spent in `acquire` (a metric)."""
        self._starts: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until one more request may start now, and count it as started."""
        entered = time.monotonic()
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._starts and self._starts[0] <= now - self.window_s:
                    self._starts.popleft()
                if len(self._starts) < self.limit:
                    self._starts.append(now)
                    break
                await asyncio.sleep(self._starts[0] + self.window_s - now)
        self.waited_s += time.monotonic() - entered
