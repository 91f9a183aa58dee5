"""When to try again: exponential backoff with full jitter, a server hint and a retry budget.

The delay before attempt n+1 (after n consecutive failures) is uniform in
`[0, min(cap, base * 2**(n-1))]` ("full jitter", which spreads retries of many callers best), but
never less than the server's `retry_after`. The budget counts seconds since the first attempt:
a retry that would start past it is not made, and the caller dead-letters with the history.
Pure and deterministic once `rand` is injected.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float = 0.5
    cap_s: float = 60.0
    budget_s: float = 4 * 3600.0
    rand: Callable[[], float] = random.random

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after `failures` (>= 1) consecutive failed attempts."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(failures - 1, 64))
        jittered = self.rand() * ceiling
        return jittered if retry_after is None else max(jittered, retry_after)

    def next_delay(
        self, failures: int, elapsed_s: float, retry_after: float | None = None
    ) -> float | None:
        """The delay, or None when the next attempt would start after the budget is spent."""
        delay = self.delay(failures, retry_after)
        return None if elapsed_s + delay > self.budget_s else delay
