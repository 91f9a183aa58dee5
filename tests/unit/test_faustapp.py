"""The commit rule: a partition's commit never passes an offset that was not acked."""

from __future__ import annotations

import types
from collections import defaultdict

import pytest
from faust.types import TP
from intervaltree import IntervalTree  # type: ignore[import-untyped]

from worker.faustapp import REWIND_AFTER_S, QuietMonitor, StrictCommitConsumer

PARTITION = TP("autopilot.email-events", 0)


def consumer_with(acked: list[int], committed: int | None) -> StrictCommitConsumer:
    """The consumer's commit bookkeeping alone; `_new_offset` needs nothing else."""
    consumer = StrictCommitConsumer.__new__(StrictCommitConsumer)
    consumer._acked = defaultdict(list, {PARTITION: list(acked)})
    consumer._acked_index = defaultdict(set, {PARTITION: set(acked)})
    consumer._committed_offset = defaultdict(lambda: None, {PARTITION: committed})
    consumer._gap = defaultdict(IntervalTree)
    consumer._held_since = {}
    return consumer


@pytest.mark.parametrize(
    ("acked", "committed", "expected"),
    [
        ([40, 41, 42], 40, 43),
        ([41, 42], 40, None),  # faust 0.15.3 commits 43: offset 40 would be lost
        ([1, 2], 0, None),  # faust skips its check when the committed offset is 0
        ([40, 41, 41, 42, 42, 43], 40, 44),  # a message acked twice: faust creeps to 42
        ([37, 38, 40, 41], 40, 42),  # acks left below the committed offset
        ([40, 41, 43, 44], 40, 42),  # a gap further on: commit up to it
        ([5, 6, 8], None, 7),  # never committed: the run begins at the lowest ack
        ([], 40, None),
    ],
)
def test_the_commit_covers_only_consecutive_acks_from_the_committed_offset(
    acked: list[int], committed: int | None, expected: int | None
) -> None:
    assert consumer_with(acked, committed)._new_offset(PARTITION) == expected


def test_a_run_may_begin_at_a_record_faust_never_delivers() -> None:
    consumer = consumer_with([41, 42], 40)
    consumer._gap[PARTITION].addi(40, 41)  # e.g. a transaction marker at offset 40

    assert consumer._new_offset(PARTITION) == 43


def test_a_held_back_run_is_committed_once_the_missing_offset_is_acked() -> None:
    consumer = consumer_with([41, 42], 40)
    assert consumer._new_offset(PARTITION) is None

    consumer._acked[PARTITION].append(40)

    assert consumer._new_offset(PARTITION) == 43
    assert consumer._acked[PARTITION] == []


def test_a_partition_held_back_too_long_is_read_again_from_the_committed_offset() -> None:
    consumer = consumer_with([491, 492], 489)
    assert consumer._new_offset(PARTITION) is None
    since = consumer._held_since[PARTITION]

    assert consumer.held_too_long(since + REWIND_AFTER_S - 1) == []
    assert consumer.held_too_long(since + REWIND_AFTER_S) == [(PARTITION, 489)]


def test_progress_clears_the_hold() -> None:
    consumer = consumer_with([41, 42], 40)
    consumer._new_offset(PARTITION)
    consumer._acked[PARTITION].append(40)

    assert consumer._new_offset(PARTITION) == 43
    assert consumer.held_too_long(float("inf")) == []


def test_a_partition_with_nothing_acked_is_not_held() -> None:
    consumer = consumer_with([], 40)
    consumer._new_offset(PARTITION)

    assert consumer.held_too_long(float("inf")) == []


def test_the_quiet_monitor_keeps_no_per_event_statistics() -> None:
    monitor = QuietMonitor()
    message = types.SimpleNamespace(time_in=None)

    monitor.on_message_in(PARTITION, 5, message)
    monitor.on_stream_event_in(PARTITION, 5, object(), object())

    assert monitor.messages_received_total == 0
    assert monitor.events_total == 0
    assert message.time_in is None
