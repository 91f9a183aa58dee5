"""Counts over the last hour and day: what grew in each minute, kept for a day."""

from __future__ import annotations

from collections import Counter

from tests.unit.doubles import RecordingSender
from worker.errors import DecodeError, SkipMessage
from worker.pipeline.breaker import Breaker
from worker.pipeline.records import InboundMessage, OutboundRecord
from worker.pipeline.stage import Stage
from worker.runtime.history import KEEP_MINUTES, CountHistory, running_totals


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


IN = ("stage", "source", "intake", "in")


def test_a_window_sums_the_minutes_it_covers() -> None:
    clock = Clock()
    history = CountHistory(clock)
    history.record({IN: 5})
    clock.now += 30 * 60
    history.record({IN: 8})
    clock.now += 40 * 60
    history.record({IN: 10})
    assert history.window(3600)[IN] == 2 + 3  # the first five are 70 minutes old
    assert history.window(86400)[IN] == 10
    clock.now += 86400
    history.record({IN: 10})
    assert history.window(86400)[IN] == 0
    assert history.window(86400) == Counter()


def test_a_minute_keeps_only_what_grew_and_old_minutes_are_dropped() -> None:
    clock = Clock()
    history = CountHistory(clock)
    for total in range(3 * KEEP_MINUTES):
        history.record({IN: total, ("requests",): 7})
        clock.now += 60
    assert len(history._minutes) <= KEEP_MINUTES
    assert all(("requests",) not in grew for _, grew in list(history._minutes)[1:])


def test_a_counter_that_starts_again_counts_from_zero() -> None:
    history = CountHistory(Clock())
    history.record({IN: 100})
    history.record({IN: 3})
    assert history.window(60)[IN] == 103


def test_series_buckets_oldest_first_the_one_under_way_last() -> None:
    clock = Clock(1_800_000_000.0 - 1_800_000_000.0 % 900)  # at the start of a 15-minute bucket
    history = CountHistory(clock)
    history.record({IN: 1})
    clock.now += 15 * 60
    history.record({IN: 3})
    series = history.series(86400, 900)
    assert len(series.buckets) == 96
    assert series.bucket_s == 900
    assert [b[IN] for b in series.buckets[-2:]] == [1, 2]
    assert series.starts_at + 95 * 900 <= clock.now < series.starts_at + 96 * 900
    hour = history.series(3600, 60)
    assert len(hour.buckets) == 60
    assert hour.buckets[-1][IN] == 2


def _handler(message: InboundMessage) -> list[OutboundRecord]:
    if message.value == b"skip":
        raise SkipMessage("test_delivery")
    if message.value == b"bad":
        raise DecodeError("not JSON")
    return [OutboundRecord("out", None, message.value, [])]


def test_running_totals_read_the_counters_the_metrics_export() -> None:
    stage = Stage(
        "source",
        "intake",
        _handler,
        RecordingSender(),
        "dlq",
        Breaker(window=10, min_messages=10, max_ratio=0.5),
    )
    stage.route(
        [InboundMessage("in", 0, n, 0, None, v) for n, v in enumerate([b"ok", b"skip", b"bad"])]
    )
    totals = running_totals([stage], {("delivered", "200"): 4}, requests=9, waited_ms=250)
    assert totals == {
        ("stage", "source", "intake", "in"): 3,
        ("stage", "source", "intake", "out"): 1,
        ("stage", "source", "intake", "skipped", "test_delivery"): 1,
        ("stage", "source", "intake", "dead_lettered", "DecodeError", "400"): 1,
        ("delivery", "delivered", "200"): 4,
        ("requests",): 9,
        ("rate_limit_waited_ms",): 250,
    }
