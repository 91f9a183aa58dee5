"""The per-message loop: every fate routed, nothing escapes but a stop, records handed off."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from tests.unit.doubles import RecordingSender
from worker.errors import (
    ConfigurationError,
    PipelinePaused,
    SkipMessage,
    ValidationError,
)
from worker.pipeline.breaker import Breaker
from worker.pipeline.dead_letters import DeadLetterHeaders as H
from worker.pipeline.records import ORIGIN_PREFIX, InboundMessage, OutboundRecord
from worker.pipeline.stage import (
    DEAD_LETTER_LINES_PER_S,
    FailedAfter,
    LineBudget,
    Stage,
)


def message(value: bytes, offset: int = 0) -> InboundMessage:
    return InboundMessage(
        topic="in", partition=1, offset=offset, timestamp_ms=1_700_000_000_000,
        key=b"key", value=value, headers=[("h", b"v")],
    )  # fmt: skip


def handler(msg: InboundMessage) -> list[OutboundRecord] | FailedAfter:
    learned = OutboundRecord("learned", msg.key, b"identity", [])
    if msg.value == b"learn-then-skip":
        return FailedAfter([learned], SkipMessage("no_trigger"))
    if msg.value == b"learn-then-bad":
        return FailedAfter([learned], ValidationError("Email is required for track calls"))
    if msg.value == b"skip":
        raise SkipMessage("not_for_us")
    if msg.value == b"bad":
        raise ValidationError("contact.email: field required")
    if msg.value == b"bug":
        raise KeyError("oops")
    if msg.value == b"stop":
        raise ConfigurationError("no way")
    return [OutboundRecord("out", msg.key, msg.value.upper(), [])]


def pipeline(sender: RecordingSender, *, window: int = 100, min_messages: int = 100) -> Stage:
    breaker = Breaker(window=window, min_messages=min_messages, max_ratio=0.5)
    return Stage("p", "s", handler, sender, "dlq", breaker, secrets=("s3cret",))


async def test_each_fate_is_routed_in_input_order() -> None:
    sender = RecordingSender()
    p = pipeline(sender)
    batch = [message(v, i) for i, v in enumerate([b"a", b"skip", b"bad", b"bug", b"b"])]
    await p.process(batch)
    assert [(r.topic, r.value) for r in sender.sent] == [
        ("out", b"A"),
        ("dlq", b"bad"),
        ("dlq", b"bug"),
        ("out", b"B"),
    ]
    bad, bug = (dict(r.headers) for r in sender.sent[1:3])
    assert bad[H.CLASS_NAME] == b"ValidationError"
    assert bad[H.STATUS] == b"400"
    assert bad[H.MESSAGE] == b"contact.email: field required"
    assert bad[H.OFFSET] == b"2"
    assert bad["h"] == b"v"
    assert bug[H.CLASS_NAME] == b"UnexpectedError"
    assert bug[H.STATUS] == b"500"
    assert p.stats.skipped == {"not_for_us": 1}
    assert p.stats.dead_lettered == {"ValidationError": 1, "UnexpectedError": 1}


async def test_records_made_before_a_failure_are_sent_and_the_failure_routed() -> None:
    sender = RecordingSender()
    p = pipeline(sender)
    await p.process([message(b"learn-then-skip", 0), message(b"learn-then-bad", 1)])
    assert [(r.topic, r.value) for r in sender.sent] == [
        ("learned", b"identity"),
        ("learned", b"identity"),
        ("dlq", b"learn-then-bad"),
    ]
    assert p.stats.skipped == {"no_trigger": 1}
    assert p.stats.dead_lettered == {"ValidationError": 1}


async def test_a_stop_escapes_and_nothing_is_sent() -> None:
    sender = RecordingSender()
    with pytest.raises(ConfigurationError):
        await pipeline(sender).process([message(b"a"), message(b"stop")])
    assert sender.sent == []


def test_breaker_trips_only_past_the_ratio_after_the_minimum() -> None:
    breaker = Breaker(window=10, min_messages=8, max_ratio=0.5, pipeline="p")
    for bug in (True, True, True, True, False, False, False):
        breaker.record(unexpected=bug)  # 4 of 7, but under the minimum: never trips
    breaker.record(unexpected=False)  # 4 of 8 is not above 50%
    assert not breaker.paused
    breaker.record(unexpected=True)
    assert isinstance(breaker.tripped, PipelinePaused)
    assert "5 of the last 9" in str(breaker.tripped)
    assert breaker.paused_since is not None


def test_breaker_forgets_outside_the_window() -> None:
    breaker = Breaker(window=4, min_messages=4, max_ratio=0.5)
    for bug in (True, True, False, False):
        breaker.record(unexpected=bug)  # 2 of 4: not above 50%
    for _ in range(10):
        breaker.record(unexpected=False)
    breaker.record(unexpected=True)  # the old failures slid out: 1 of 4
    breaker.record(unexpected=True)  # 2 of 4
    assert not breaker.paused


@pytest.mark.parametrize("seed", range(20))
def test_a_run_of_messages_that_ended_well_counts_as_each_one(seed: int) -> None:
    rng = random.Random(seed)
    each = Breaker(window=7, min_messages=100, max_ratio=0.5)
    runs = Breaker(window=7, min_messages=100, max_ratio=0.5)
    for _ in range(30):
        if rng.random() < 0.4:
            each.record(unexpected=True)
            runs.record(unexpected=True)
        else:
            count = rng.randint(1, 12)
            for _ in range(count):
                each.record(unexpected=False)
            runs.record_ok(count)
        assert (list(runs._outcomes), runs._failed) == (list(each._outcomes), each._failed)


async def test_bad_data_however_concentrated_never_trips_the_breaker() -> None:
    """Invalid input is what the dead-letter topic is for: every message of a long burst is
    dead-lettered and the stage never pauses."""
    sender = RecordingSender()
    p = pipeline(sender, window=50, min_messages=10)
    await p.process([message(b"bad", n) for n in range(500)])
    assert not p.breaker.paused
    assert len(sender.sent) == 500
    assert p.stats.dead_lettered["ValidationError"] == 500


async def test_a_bug_failing_most_messages_pauses_once_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender = RecordingSender()
    p = pipeline(sender, window=20, min_messages=10)
    with caplog.at_level(logging.CRITICAL, logger="worker.pipeline.stage"):
        await p.process([message(b"bug", n) for n in range(40)])
    assert p.breaker.paused
    # the batch in hand is finished: every failure is a replayable dead letter, none lost
    assert len(sender.sent) == 40
    assert [r.message for r in caplog.records if "paused" in r.message] == [
        f"pipeline ? paused: {p.breaker.tripped}"
    ]


async def test_resume_takes_messages_again_with_a_fresh_window() -> None:
    breaker = Breaker(window=10, min_messages=2, max_ratio=0.5)
    breaker.record(unexpected=True)
    breaker.record(unexpected=True)
    assert breaker.paused
    waiter = asyncio.ensure_future(breaker.wait_resumed())
    await asyncio.sleep(0)
    assert not waiter.done()
    assert breaker.resume()
    await asyncio.wait_for(waiter, 1)
    assert not breaker.paused
    breaker.record(unexpected=True)  # 1 of 1: under the minimum again
    assert not breaker.paused
    assert not Breaker(window=1, min_messages=1, max_ratio=1).resume()


async def test_dead_letter_keeps_origin_of_forwarded_message_and_masks_secrets() -> None:
    def leaky(_msg: InboundMessage) -> list[OutboundRecord]:
        raise ValidationError("key s3cret leaked")

    sender = RecordingSender()
    forwarded = InboundMessage(
        topic="internal", partition=0, offset=9, timestamp_ms=5, key=b"k", value=b"raw",
        headers=[("h", b"v"), (ORIGIN_PREFIX + "topic", b"in"),
                 (ORIGIN_PREFIX + "partition", b"2"), (ORIGIN_PREFIX + "offset", b"77"),
                 (ORIGIN_PREFIX + "timestamp", b"123"), (ORIGIN_PREFIX + "key", b"producer")],
    )  # fmt: skip
    p = pipeline(sender)
    p.handler = leaky
    await p.process([forwarded])
    (letter,) = sender.sent
    headers = dict(letter.headers)
    assert letter.value == b"raw"
    assert letter.key == b"producer"  # the producer's key, not the re-keyed one
    assert (headers[H.TOPIC], headers[H.PARTITION], headers[H.OFFSET]) == (b"in", b"2", b"77")
    assert headers[H.TIMESTAMP] == b"123"
    assert not any(k.startswith(ORIGIN_PREFIX) for k in headers)
    assert headers[H.MESSAGE] == b"key ********** leaked"


def test_a_forwarded_message_counts_in_the_breaker_only_where_it_ends() -> None:
    """An intake forwards what it cannot map in place; the breaker its pipeline's stages share
    counts each message once, where it ends, so the ratio is over the pipeline's inputs."""
    breaker = Breaker(window=100, min_messages=10, max_ratio=0.5)

    def forward(msg: InboundMessage) -> list[OutboundRecord]:
        return [OutboundRecord("internal", msg.key, msg.value, [])]

    def fail(msg: InboundMessage) -> list[OutboundRecord]:
        raise RuntimeError("a bug")

    intake = Stage("p", "intake", forward, RecordingSender(), "dlq", breaker)
    intake.forward_topic = "internal"
    in_place = Stage("p", "intake", handler, RecordingSender(), "dlq", breaker)
    map_stage = Stage("p", "map", fail, RecordingSender(), "dlq", breaker)

    in_place.route([message(b"ok", n) for n in range(4)])  # 4 done well
    intake.route([message(b"x", n) for n in range(4, 10)])  # 6 forwarded, not done yet
    map_stage.route([message(b"x", n) for n in range(4, 9)])  # 5 of 9 done failed: too few
    assert not breaker.paused
    map_stage.route([message(b"x", 9)])  # 6 of 10 (had forwards counted: 6 of 16)
    assert breaker.paused


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_line_budget_refuses_past_its_lines_a_second_and_counts_what_it_refused() -> None:
    clock = Clock()
    budget = LineBudget(3, clock)
    assert [budget.take() for _ in range(5)] == [0, 0, 0, None, None]
    clock.now += 0.9
    assert budget.take() is None
    clock.now += 0.1
    assert [budget.take() for _ in range(2)] == [3, 0]


async def test_a_flood_of_dead_letters_is_logged_within_the_budget_and_all_of_it_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender = RecordingSender()
    clock = Clock()
    p = pipeline(sender, window=1000, min_messages=1000)
    p.dead_letter_lines = LineBudget(DEAD_LETTER_LINES_PER_S, clock)
    flood = DEAD_LETTER_LINES_PER_S + 5
    with caplog.at_level(logging.WARNING, logger="worker.pipeline.stage"):
        await p.process([message(b"bad", i) for i in range(flood)])
        clock.now += 1
        await p.process([message(b"bad", flood)])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dead-lettered")]
    assert len(lines) == DEAD_LETTER_LINES_PER_S + 1
    assert lines[-1].endswith(
        f"in[1]@{flood} in p/s: contact.email: field required "
        "(5 earlier dead letters of this stage not logged)"
    )
    assert len(sender.sent) == flood + 1  # every one dead-lettered all the same
    assert p.stats.dead_lettered == {"ValidationError": flood + 1}
