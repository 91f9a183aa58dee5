"""The rate limiter, in real time: never more than N arrivals in any one-second window, and no
request beyond what its share of the key allows."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from worker.delivery.ratelimit import RateLimiter
from worker.delivery.share import KeyShare


async def test_twelve_requests_at_five_per_second_never_put_six_arrivals_in_one_second() -> None:
    limiter = RateLimiter(5)
    rng = random.Random(3)
    starts: list[float] = []
    arrivals: list[float] = []

    async def request() -> None:
        before, after = rng.uniform(0, 0.1), rng.uniform(0, 0.1)
        async with limiter.slot():
            starts.append(time.monotonic())
            await asyncio.sleep(before)  # the server sees the request somewhere in its flight
            arrivals.append(time.monotonic())
            await asyncio.sleep(after)

    began = time.monotonic()
    await asyncio.gather(*(request() for _ in range(12)))
    arrivals.sort()
    assert len(arrivals) == 12
    # Any 6 arrivals span at least a second, so no 1 s window holds 6, whatever the transit.
    assert min(b - a for a, b in zip(arrivals, arrivals[5:], strict=False)) >= 1.0
    assert sum(1 for t in starts if t - began < 0.05) == 5  # a burst of 5 may start at once
    assert starts[-1] - began >= 2.0
    assert limiter.waited_s > 5.0  # seven callers waited one or two seconds each


async def test_a_slot_is_held_until_a_window_after_the_response() -> None:
    limiter = RateLimiter(1)
    began = time.monotonic()
    async with limiter.slot():
        await asyncio.sleep(0.2)
    async with limiter.slot():
        assert time.monotonic() - began >= 1.2


@pytest.mark.parametrize(("rate", "limit", "window_s"), [(5, 5, 1.0), (2.5, 2, 1.0), (0.5, 1, 2.0)])
def test_fractional_rates_round_down_per_second(rate: float, limit: int, window_s: float) -> None:
    limiter = RateLimiter(rate)
    assert (limiter.limit, limiter.window_s) == (limit, window_s)


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)


async def test_a_share_holds_requests_back_until_its_partitions_are_owned_a_handover_long() -> None:
    share = KeyShare(2, handover_s=0.3, epoch_s=100.0)
    limiter = RateLimiter(2, share=share)
    began = time.monotonic()
    started: list[float] = []

    async def request() -> None:
        async with limiter.slot():
            started.append(time.monotonic() - began)

    waiting = asyncio.gather(request(), request(), request())
    await asyncio.sleep(0.2)
    assert started == []  # no partition: nothing is sent
    share.assigned([0, 1, 2], 3, generation=1)  # wakes the limiter, which waits the hand-over
    await waiting
    assert 0.5 <= started[0] <= started[1] < 1.0  # two slots after 0.2 + 0.3 s
    assert started[2] >= started[0] + 1.0  # the third waited for a slot to leave its window
    share.revoked([0, 1, 2])
    late = asyncio.ensure_future(request())
    await asyncio.sleep(1.2)
    assert not late.done()  # a lost share is lost at once
    late.cancel()


async def test_a_request_cancelled_in_flight_holds_its_slot_a_request_timeout_long() -> None:
    limiter = RateLimiter(1, request_timeout_s=0.4)

    async def hangs() -> None:
        async with limiter.slot():
            await asyncio.sleep(10)

    began = time.monotonic()
    task = asyncio.ensure_future(hangs())
    await asyncio.sleep(0.05)
    task.cancel()  # it may still arrive within the request timeout of its start
    async with limiter.slot():
        assert time.monotonic() - began >= 0.4 + 1.0
