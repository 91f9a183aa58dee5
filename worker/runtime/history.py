"""Counts over the last hour and day: per-minute increments of the worker's own counters.

The counters are the ones `/metrics` exports (`StageStats` of every stage, the delivery
outcomes, the rate limiter's requests), read as they are, so the console's counts and the
metrics never disagree and the per-message loop pays nothing more. `CountHistory.record` takes
their running totals (a sampler does, every few seconds, and the console before it renders) and
keeps what grew in each minute, for a day: a ring of at most `KEEP_MINUTES` buckets, each
holding only the keys that grew in that minute, so an idle worker keeps next to nothing.

The history lives in the process: it starts empty when the process starts (the console says
since when it counts) and is not rebuilt from the topics.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from worker.pipeline.stage import Stage

__all__ = ["KEEP_MINUTES", "CountHistory", "Key", "Series", "running_totals"]

#: A counter's name: ("stage", pipeline, stage, "in" | "out"), ("stage", pipeline, stage,
#: "skipped", reason), ("stage", pipeline, stage, "dead_lettered", error class, status),
#: ("delivery", outcome, status), ("requests",), ("rate_limit_waited_ms",).
Key = tuple[str, ...]

#: A day of one-minute buckets, and the minute under way.
KEEP_MINUTES = 24 * 60 + 1


def running_totals(
    stages: Iterable[Stage],
    delivery_outcomes: Mapping[tuple[str, str], int],
    *,
    requests: int,
    waited_ms: int = 0,
) -> dict[Key, int]:
    """Every counter's running total now, by `Key`."""
    totals: dict[Key, int] = {}
    for stage in stages:
        stats, where = stage.stats, ("stage", stage.name, stage.stage)
        totals[(*where, "in")] = stats.consumed
        totals[(*where, "out")] = stats.produced
        for reason, count in stats.skipped.items():
            totals[(*where, "skipped", reason)] = count
        for (error_class, status), count in stats.dead_lettered_status.items():
            totals[(*where, "dead_lettered", error_class, status)] = count
    for (outcome, status), count in delivery_outcomes.items():
        totals["delivery", outcome, status] = count
    totals["requests",] = requests
    totals["rate_limit_waited_ms",] = waited_ms
    return totals


@dataclass(frozen=True, slots=True)
class Series:
    """Counts per bucket, oldest first, for a chart: `buckets[i]` covers the `bucket_s` seconds
    that began at `starts_at + i * bucket_s` (epoch seconds)."""

    starts_at: float
    bucket_s: int
    buckets: list[Counter[Key]]


class CountHistory:
    """Per-minute increments of running totals, for `KEEP_MINUTES` minutes."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.started_at = clock()
        self._last: dict[Key, int] = {}
        self._minutes: deque[tuple[int, Counter[Key]]] = deque()

    def record(self, totals: Mapping[Key, int]) -> None:
        """Count what grew since the last call in the minute under way. A total lower than the
        last one seen (a counter that started again) counts from zero."""
        minute = int(self._clock() // 60)
        grew: Counter[Key] = Counter()
        for key, total in totals.items():
            before = self._last.get(key, 0)
            increment = total - before if total >= before else total
            if increment > 0:
                grew[key] = increment
        self._last = dict(totals)
        if self._minutes and self._minutes[-1][0] == minute:
            self._minutes[-1][1].update(grew)
        elif grew:
            self._minutes.append((minute, grew))
        while self._minutes and self._minutes[0][0] <= minute - KEEP_MINUTES:
            self._minutes.popleft()

    def window(self, seconds: int) -> Counter[Key]:
        """What grew in the last `seconds` (whole minutes: the minute under way and the ones
        before it), by key."""
        first = int(self._clock() // 60) - max(1, seconds // 60) + 1
        total: Counter[Key] = Counter()
        for minute, grew in self._minutes:
            if minute >= first:
                total.update(grew)
        return total

    def series(self, seconds: int, bucket_s: int) -> Series:
        """The last `seconds` in buckets of `bucket_s` (a multiple of 60), the one under way
        last."""
        per_bucket = max(1, bucket_s // 60)
        count = max(1, seconds // (per_bucket * 60))
        now_minute = int(self._clock() // 60)
        last_bucket = now_minute // per_bucket
        first_bucket = last_bucket - count + 1
        buckets: list[Counter[Key]] = [Counter() for _ in range(count)]
        for minute, grew in self._minutes:
            index = minute // per_bucket - first_bucket
            if 0 <= index < count:
                buckets[index].update(grew)
        return Series(first_bucket * per_bucket * 60.0, per_bucket * 60, buckets)
