"""Full-jitter exponential backoff: bounds, the server hint, the budget, determinism."""

from __future__ import annotations

import random

import pytest

from worker.delivery.backoff import Backoff


def test_ceiling_doubles_up_to_the_cap() -> None:
    backoff = Backoff(base_s=0.5, cap_s=10.0, rand=lambda: 1.0)
    assert [backoff.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.delay(10_000) == 10.0


def test_full_jitter_stays_within_zero_and_the_ceiling() -> None:
    rng = random.Random(7)
    backoff = Backoff(base_s=1.0, cap_s=30.0, rand=rng.random)
    delays = [backoff.delay(4) for _ in range(1000)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert min(delays) < 1.0
    assert max(delays) > 7.0


def test_same_random_source_gives_same_delays() -> None:
    first = Backoff(rand=random.Random(42).random)
    second = Backoff(rand=random.Random(42).random)
    assert [first.delay(n) for n in range(1, 20)] == [second.delay(n) for n in range(1, 20)]


@pytest.mark.parametrize(("jitter", "hint", "expected"), [(0.0, 3.0, 3.0), (1.0, 0.2, 2.0)])
def test_server_hint_is_a_floor(jitter: float, hint: float, expected: float) -> None:
    backoff = Backoff(base_s=1.0, cap_s=60.0, rand=lambda: jitter)
    assert backoff.delay(2, retry_after=hint) == expected


def test_hint_beyond_the_cap_is_still_honoured() -> None:
    assert Backoff(cap_s=5.0, rand=lambda: 0.5).delay(1, retry_after=120.0) == 120.0


def test_budget_ends_retries() -> None:
    backoff = Backoff(base_s=1.0, cap_s=60.0, budget_s=100.0, rand=lambda: 1.0)
    assert backoff.next_delay(3, elapsed_s=50.0) == 4.0
    assert backoff.next_delay(3, elapsed_s=96.0) == 4.0
    assert backoff.next_delay(3, elapsed_s=97.0) is None
    assert backoff.next_delay(1, elapsed_s=10.0, retry_after=95.0) is None
