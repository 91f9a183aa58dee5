"""The rate limiter, in real time: never more than N starts in any one-second window."""

from __future__ import annotations

import asyncio
import time

import pytest

from worker.delivery.ratelimit import RateLimiter


async def test_twelve_acquisitions_at_five_per_second_never_put_six_in_one_second() -> None:
    limiter = RateLimiter(5)
    starts: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        starts.append(time.monotonic())

    began = time.monotonic()
    await asyncio.gather(*(one() for _ in range(12)))
    starts.sort()
    assert len(starts) == 12
    # Any 6 consecutive starts span at least a second, so no 1 s window holds 6.
    assert min(b - a for a, b in zip(starts, starts[5:], strict=False)) >= 1.0
    assert sum(1 for t in starts if t - began < 1.0) == 5  # a burst of 5 is allowed at once
    assert starts[-1] - began >= 2.0
    assert limiter.waited_s > 5.0  # seven callers waited about one and two seconds


@pytest.mark.parametrize(
    ("rate", "limit", "window_s"), [(5, 5, 1.05), (2.5, 2, 1.05), (0.5, 1, 2.05)]
)
def test_fractional_rates_round_down_per_second(rate: float, limit: int, window_s: float) -> None:
    limiter = RateLimiter(rate)
    assert limiter.limit == limit
    assert limiter.window_s == pytest.approx(window_s)


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)
