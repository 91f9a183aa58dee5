"""The request rate limit of one API key, kept by every process that sends with the key.

The API counts requests when they arrive, which is some time between our start and the response,
and refuses one that finds `limit` arrivals in the last `window_s`. A request *holds a slot*
from its start until `window_s` after its arrival. The limiter cannot see the arrival, so it
counts the slot as held until `window_s` after the response came back, or, for a request
cancelled in flight, after its start plus the request timeout if that is later (assumption A
below). A request may start only while the process holds fewer slots than its capacity: the
key's `limit` for a process alone, its `share` of it (`worker.delivery.share`) when several
processes send with one key. Slots are handed out one at a time, first come first served.

Lemma. If `limit + 1` requests arrive within one window, all of them hold a slot at the moment t
the last of them started: each started by the end of the window at the latest (before it
arrived), and holds its slot until `window_s` after its arrival, which is after the end of the
window.

One process. At t the process would hold `limit + 1` slots, counted as held (the limiter counts
a slot at least as long as it is held), which it never does. Hence no window of `window_s` ever
sees more than `limit` arrivals, however long the transit, and the stand-in's sliding-window
check sees no violation. The price is throughput: each slot turns over once per `window_s` plus
the response time.

Many processes, one key. Assume
  (A) a request arrives, if ever, within the request timeout D of its start (a request given up
      on has arrived or never will), so a slot is held at most H = D + `window_s` (the share's
      hand-over delay);
  (B) at any moment, the processes' nominal shares (the slots the apportioning gives the
      partitions each owns then, `worker.delivery.share`) sum to at most `limit`: the table
      gives the partitions `limit` slots in every epoch; a partition has one owner at a time
      (a process drops a partition when faust's revocation ends or when it starts shutting down,
      before it rejoins or leaves the group, and the group assigns it anew only after that);
      and replicas' wall clocks differ by less than the margin during which a process counts
      the lesser of two epochs after a boundary, so all count the slots of one same epoch;
and let each process's capacity be the least of its nominal shares over the last H.
Take `limit + 1` arrivals within one window and t as in the lemma. For a process q that sent n_q
of them, let s_q <= t be the start of its latest one: the others started earlier and still held
their slots at t, hence at s_q, so n_q <= capacity_q(s_q). Since that request still held its
slot at t, s_q > t - H; so the moment t - H lies within the last H before every s_q, and
capacity_q(s_q) <= nominal_q(t - H). Summing over the processes, limit + 1 <= the sum of the
nominal shares at t - H <= limit: a contradiction. Hence the group never exceeds the key's limit,
whatever the number of processes and however the partitions move.

What (B) leaves out: a process that the group expelled (no heartbeat for the session timeout)
while it could still reach the API goes on sending until it rejoins; a revocation longer than
the group's rebalance timeout would be one, which the delivery's give-back grace prevents. And
every replica must run with the same limit and request timeout (they make the table).

`limit` is `floor(rate)` per second (a rate below 1 becomes one request per `1/rate` seconds).
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

__all__ = ["RateLimiter", "Share", "slots_per_window"]


def slots_per_window(rate: float) -> tuple[int, float]:
    """(`limit`, `window_s`) for `rate` requests a second."""
    if not rate > 0:
        raise ValueError("rate must be positive")
    return max(1, math.floor(rate)), max(1.0, 1.0 / rate)


class Share(Protocol):
    """The part of the key's slots this process may hold now (`worker.delivery.share`)."""

    def capacity(self) -> int: ...

    def rise_in(self) -> float:
        """Seconds until the capacity may rise without a call to the listeners."""
        ...

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever the capacity may have changed otherwise."""
        ...


class RateLimiter:
    def __init__(
        self, rate: float, *, share: Share | None = None, request_timeout_s: float = 0.0
    ) -> None:
        self.limit, self.window_s = slots_per_window(rate)
        self.share = share
        self.request_timeout_s = request_timeout_s
        self.waited_s = 0.0  # cumulative seconds callers waited for a slot (a metric)
        self.requests = 0  # requests let through so far (the console's rate in use)
        self._in_flight = 0
        self._finished: list[float] = []  # sorted: when each recent request stopped holding
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        if share is not None:
            share.subscribe(self._wake.set)

    def capacity(self) -> int:
        """How many slots this process may hold now."""
        return self.limit if self.share is None else min(self.limit, self.share.capacity())

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait until one more request may start; send it inside the block."""
        await self._acquire()
        started = time.monotonic()
        cancelled = False
        try:
            yield
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            ended = time.monotonic()
            if cancelled:  # it may be on its way still (assumption A)
                ended = max(ended, started + self.request_timeout_s)
            self._in_flight -= 1
            bisect.insort(self._finished, ended)
            self._wake.set()

    async def _acquire(self) -> None:
        entered = time.monotonic()
        async with self._lock:
            while True:
                now = time.monotonic()
                finished = self._finished
                expired = bisect.bisect_right(finished, now - self.window_s)
                del finished[:expired]
                if self._in_flight + len(finished) < self.capacity():
                    self._in_flight += 1
                    break
                waits = [finished[0] + self.window_s - now] if finished else []
                if self.share is not None:
                    waits.append(self.share.rise_in())
                self._wake.clear()
                try:
                    async with asyncio.timeout(min(waits) if waits else None):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        self.waited_s += time.monotonic() - entered
        self.requests += 1
