"""The worker side of a replay: a letter rewritten by `dlq replay`, run through its stage again.

Each test starts from a dead letter the real `dead_letters.dead_letter` wrote, rewrites it as
`dlq replay` does, reads it back as the retry topic's message and hands it to
`worker.pipeline.replay.replay_through` with a registry of real `Stage`s.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime

import pytest

from worker.errors import (
    ConfigurationError,
    DecodeError,
    SkipMessage,
    ValidationError,
)
from worker.pipeline.breaker import Breaker
from worker.pipeline.dead_letters import DeadLetterHeaders as H
from worker.pipeline.dead_letters import dead_letter
from worker.pipeline.letters import DeadLetter, LetterRef
from worker.pipeline.records import ORIGIN_PREFIX, InboundMessage, OutboundRecord, header
from worker.pipeline.replay import (
    REPLAY_PIPELINE,
    REPLAY_STAGE,
    REPLAY_TARGET,
    replay_through,
)
from worker.pipeline.replay_plan import plan_replay
from worker.pipeline.stage import Stage

DLQ = "dead-letters"
RETRY = "app.retry"


class NoSender:
    async def send(self, records: Sequence[OutboundRecord]) -> Awaitable[object]:
        raise AssertionError("replay_through returns records; it never sends")


def intake(message: InboundMessage) -> list[OutboundRecord]:
    if message.value.startswith(b"{not"):
        raise DecodeError("not JSON")
    if message.value == b"skip":
        raise SkipMessage("not_for_us")
    if message.value == b"stop":
        raise ConfigurationError("no way")
    if message.value == b"bug":
        raise KeyError("oops")
    return [OutboundRecord("internal", message.key, message.value, message.forwarded_headers())]


def stage(name: str, stage_name: str) -> Stage:
    breaker = Breaker(window=10, min_messages=1, max_ratio=0.1)
    return Stage(name, stage_name, intake, NoSender(), DLQ, breaker, secrets=("s3cret",))


def registry(*, with_own: bool = True) -> dict[tuple[str, str], Stage]:
    stages = [stage("source", "intake")]
    if with_own:
        stages.append(stage(REPLAY_PIPELINE, REPLAY_STAGE))
    return {(p.name, p.stage): p for p in stages}


def input_message(value: bytes, headers: list[tuple[str, bytes]] | None = None) -> InboundMessage:
    return InboundMessage(
        topic="email-events", partition=2, offset=42, timestamp_ms=1_700_000_000_000,
        key=b"k", value=value, headers=headers or [("trace-id", b"abc")],
    )  # fmt: skip


def letter_of(record: OutboundRecord, offset: int = 0) -> DeadLetter:
    return DeadLetter(LetterRef(0, offset), 0, record.key, record.value, list(record.headers))


def on_retry_topic(letter: DeadLetter, offset: int = 0) -> InboundMessage:
    """The letter as `dlq replay` writes it, as the worker reads it from the retry topic."""
    (item,) = plan_replay([letter], retry_topic=RETRY, max_replays=3).replays
    return InboundMessage(
        topic=RETRY,
        partition=0,
        offset=offset,
        timestamp_ms=1_800_000_000_000,
        key=item.record.key,
        value=item.record.value,
        headers=item.record.headers,
    )


def first_letter(value: bytes) -> DeadLetter:
    original = input_message(value)
    record = dead_letter(
        original, DecodeError("not JSON"), topic=DLQ, pipeline="source", stage="intake"
    )
    return letter_of(record)


def test_dead_letter_keeps_replay_count_and_first_failure() -> None:
    message = input_message(
        b"x",
        [("trace-id", b"abc"), (H.REPLAY_COUNT, b"2"), (H.FIRST_FAILURE, b"2026-01-01")],
    )
    record = dead_letter(message, DecodeError("bad"), topic=DLQ, pipeline="p", stage="s")
    assert header(record.headers, H.REPLAY_COUNT) == b"2"
    assert header(record.headers, H.FIRST_FAILURE) == b"2026-01-01"
    assert [v for k, v in record.headers if k == H.REPLAY_COUNT] == [b"2"]


def test_a_dead_letter_fails_now_to_the_millisecond_in_utc_the_first_time_too() -> None:
    now = datetime.now(UTC)
    before = now.replace(microsecond=now.microsecond // 1000 * 1000)  # as the header cuts it
    letters = [
        dead_letter(input_message(b"x", []), DecodeError("bad"), topic=DLQ, pipeline="p", stage="s")
        for _ in range(200)  # many in one millisecond: each says the time all the same
    ]
    after = datetime.now(UTC)
    for record in letters:
        text = header(record.headers, H.FAILED_AT)
        assert text is not None
        assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", text), text
        assert before <= datetime.fromisoformat(text.decode()) <= after
        assert header(record.headers, H.FIRST_FAILURE) == text


def test_a_letter_still_bad_is_dead_lettered_again_as_its_stage_with_count_one() -> None:
    first = first_letter(b"{not json")
    stages = registry()
    again = replay_through(stages, on_retry_topic(first))
    (record,) = again
    got = dict(record.headers)
    assert record.topic == DLQ
    assert (record.key, record.value) == (b"k", b"{not json")
    assert got["trace-id"] == b"abc"
    assert got[H.REPLAY_COUNT] == b"1"
    assert got[H.FIRST_FAILURE] == header(first.headers, H.FIRST_FAILURE)
    # it still names the input message, not the retry topic
    assert (got[H.TOPIC], got[H.PARTITION], got[H.OFFSET]) == (b"email-events", b"2", b"42")
    assert (got[H.PIPELINE], got[H.STAGE]) == (b"source", b"intake")
    assert REPLAY_TARGET not in got
    assert not any(k.startswith(ORIGIN_PREFIX) for k in got)
    assert stages["source", "intake"].stats.dead_lettered["DecodeError"] == 1

    # replayed again, it counts on, until the CLI refuses it
    third = letter_of(replay_through(stages, on_retry_topic(letter_of(record)))[0])
    assert third.replay_count == 2
    fourth = letter_of(replay_through(stages, on_retry_topic(third))[0])
    assert fourth.replay_count == 3
    plan = plan_replay([fourth], retry_topic=RETRY, max_replays=3)
    assert plan.replays == []
    assert plan.at_max_replays == [fourth]


def test_a_replay_that_fails_never_trips_the_breaker() -> None:
    # the stage's breaker would trip at the first dead letter it saw (min 1, ratio 0.1)
    stages = registry()
    for offset in range(20):
        replay_through(stages, on_retry_topic(first_letter(b"{not json"), offset))
    assert stages["source", "intake"].stats.dead_lettered["DecodeError"] == 20


def test_a_letter_that_became_valid_goes_through_its_stage() -> None:
    letter = first_letter(b'{"ok": true}')
    outputs = replay_through(registry(), on_retry_topic(letter))
    (record,) = outputs
    assert (record.topic, record.key, record.value) == ("internal", b"k", b'{"ok": true}')
    got = dict(record.headers)
    assert got["trace-id"] == b"abc"
    assert got[ORIGIN_PREFIX + "topic"] == b"email-events"  # forwarded as the original input
    assert got[H.REPLAY_COUNT] == b"1"
    assert REPLAY_TARGET not in got


def test_skip_and_unexpected_errors_are_routed_like_the_stage_would() -> None:
    stages = registry()
    assert replay_through(stages, on_retry_topic(first_letter(b"skip"))) == []
    assert stages["source", "intake"].stats.skipped["not_for_us"] == 1
    (record,) = replay_through(stages, on_retry_topic(first_letter(b"bug")))
    assert header(record.headers, H.CLASS_NAME) == b"UnexpectedError"
    assert header(record.headers, H.STATUS) == b"500"


def test_a_fatal_error_stops_as_in_the_stage() -> None:
    with pytest.raises(ConfigurationError):
        replay_through(registry(), on_retry_topic(first_letter(b"stop")))


def test_an_unknown_target_is_dead_lettered_as_the_retry_stage_with_its_target() -> None:
    delivery_letter = letter_of(
        dead_letter(
            input_message(b'{"ok": true}'),
            DecodeError("x"),
            topic=DLQ,
            pipeline="delivery",
            stage="deliver",
        )
    )
    (record,) = replay_through(registry(), on_retry_topic(delivery_letter))
    got = dict(record.headers)
    assert (got[H.PIPELINE], got[H.STAGE]) == (b"replay", b"retry")
    assert got[H.CLASS_NAME] == b"ValidationError"
    assert b"no stage delivery/deliver" in got[H.MESSAGE]
    assert b"source/intake" in got[H.MESSAGE]
    assert got[REPLAY_TARGET] == b"delivery/deliver"
    assert got[H.REPLAY_COUNT] == b"1"
    assert got[H.TOPIC] == b"email-events"
    # a later replay aims at the same target and counts on
    assert letter_of(record).target is not None
    assert str(letter_of(record).target) == "delivery/deliver"


def test_without_a_retry_stage_of_its_own_an_unknown_target_raises() -> None:
    message = on_retry_topic(first_letter(b"x"))
    bad = InboundMessage(message.topic, 0, 0, 0, None, b"x", [(REPLAY_TARGET, b"nope/nothing")])
    with pytest.raises(ValidationError, match="no stage nope/nothing"):
        replay_through(registry(with_own=False), bad)
    missing = InboundMessage(message.topic, 0, 0, 0, None, b"x", [])
    with pytest.raises(ValidationError, match="needs a"):
        replay_through(registry(with_own=False), missing)
    garbled = InboundMessage(message.topic, 0, 0, 0, None, b"x", [(REPLAY_TARGET, b"x")])
    with pytest.raises(ValidationError, match="<pipeline>/<stage>"):
        replay_through(registry(with_own=False), garbled)
