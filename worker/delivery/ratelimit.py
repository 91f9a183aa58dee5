"""The process-wide request rate limit for one API key.

The API counts requests when they arrive, which is some time between our start and the response.
So a request holds its slot from the moment it may start until `window_s` after its response
came back, and a request may start only while fewer than `limit` slots are held. Slots are handed
out one at a time, first come first served.

Why that suffices: take any `limit + 1` requests and the one of them that started last. When it
started, each of the others was either in flight or had finished within `window_s`, both of which
hold a slot, or had finished earlier, in which case it also arrived more than `window_s` before
the last one did. Hence no window of `window_s` ever sees more than `limit` arrivals, however long
the transit, and the stand-in's sliding-window check sees no violation. The price is throughput:
each slot turns over once per `window_s` plus the response time.

`limit` is `floor(rate)` per second (a rate below 1 becomes one request per `1/rate` seconds).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(self, rate: float) -> None:
        if not rate > 0:
            raise ValueError("rate must be positive")
        self.limit = max(1, math.floor(rate))
        self.window_s = max(1.0, 1.0 / rate)
        self.waited_s = 0.0  # cumulative seconds callers waited for a slot (a metric)
        self.requests = 0  # requests let through so far (the console's rate in use)
        self._in_flight = 0
        self._finished: deque[float] = deque()  # when each recent request's response came
        self._lock = asyncio.Lock()
        self._released = asyncio.Event()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait until one more request may start; send it inside the block."""
        await self._acquire()
        try:
            yield
        finally:
            self._in_flight -= 1
            self._finished.append(time.monotonic())
            self._released.set()

    async def _acquire(self) -> None:
        entered = time.monotonic()
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._finished and self._finished[0] <= now - self.window_s:
                    self._finished.popleft()
                if self._in_flight + len(self._finished) < self.limit:
                    self._in_flight += 1
                    break
                if self._finished:
                    await asyncio.sleep(self._finished[0] + self.window_s - now)
                else:
                    self._released.clear()
                    await self._released.wait()
        self.waited_s += time.monotonic() - entered
        self.requests += 1
