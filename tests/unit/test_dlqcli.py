"""`python -m worker dlq`: references, filters, the replay plan and its header rewriting."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from worker.pipeline.dead_letters import DeadLetterHeaders as H
from worker.pipeline.letters import DeadLetter, Filters, LetterRef, contacts_of, parsed_input
from worker.pipeline.records import ORIGIN_PREFIX, header
from worker.pipeline.replay import REPLAY_TARGET, ReplayTarget, replay_headers
from worker.pipeline.replay_plan import ReplayCensus, ReplayTally, Skip, classify, plan_replay
from worker.tools.dlq import Progress, build_parser, table

FAILED_AT = datetime(2026, 11, 20, 8, 15, 0, 123000, tzinfo=UTC)


def _letter(
    offset: int = 7,
    *,
    topic: str = "autopilot.email-events",
    pipeline: str = "source",
    stage: str = "intake",
    error_class: str = "DecodeError",
    failed_at: datetime | None = FAILED_AT,
    replays: int | None = None,
    input_offset: int = 42,
    extra: list[tuple[str, bytes]] | None = None,
) -> DeadLetter:
    headers: list[tuple[str, bytes]] = [
        ("trace-id", b"abc"),
        ("__autopilot.kind", b"email-event"),
        (H.TOPIC, topic.encode()),
        (H.PARTITION, b"2"),
        (H.OFFSET, str(input_offset).encode()),
        (H.TIMESTAMP, b"1700000000000"),
        (H.PIPELINE, pipeline.encode()),
        (H.STAGE, stage.encode()),
        (H.CLASS_NAME, error_class.encode()),
        (H.MESSAGE, b"not JSON:\n unexpected character"),
        (H.STATUS, b"400"),
        (H.WORKER_VERSION, b"0.1.0"),
        (H.FIRST_FAILURE, b"2026-11-01T00:00:00.000+00:00"),
        (H.ATTEMPTS, b"[]"),
        *(extra or []),
    ]
    if failed_at is not None:
        headers.append((H.FAILED_AT, failed_at.isoformat(timespec="milliseconds").encode()))
    if replays is not None:
        headers.append((H.REPLAY_COUNT, str(replays).encode()))
    return DeadLetter(
        ref=LetterRef(1, offset),
        timestamp_ms=int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000),
        key=b"k",
        value=b"{not json",
        headers=headers,
    )


# --- references ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "ref"), [("0@12", LetterRef(0, 12)), ("3:0", LetterRef(3, 0))])
def test_letter_ref_parses_both_spellings(text: str, ref: LetterRef) -> None:
    assert LetterRef.parse(text) == ref
    assert str(ref) == f"{ref.partition}@{ref.offset}"


@pytest.mark.parametrize("text", ["12", "a@1", "1@", "-1@2", "1@-2", ""])
def test_letter_ref_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="PARTITION@OFFSET"):
        LetterRef.parse(text)


def test_parser_reads_refs_filters_and_defaults() -> None:
    ns = build_parser().parse_args(
        ["replay", "0@1", "2:3", "--topic", "a", "--topic", "b", "--since", "2026-11-20"]
    )
    assert ns.refs == [LetterRef(0, 1), LetterRef(2, 3)]
    assert ns.topic == ["a", "b"]
    assert ns.since == datetime(2026, 11, 20, tzinfo=UTC)
    assert ns.max_replays == 3
    assert not ns.dry_run


def test_parser_refuses_a_zero_max_replays() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["replay", "--max-replays", "0"])


# --- reading a letter -------------------------------------------------------------------------


def test_letter_fields_come_from_the_error_headers() -> None:
    letter = _letter(replays=2)
    assert letter.topic == "autopilot.email-events"
    assert (letter.pipeline, letter.stage) == ("source", "intake")
    assert letter.error_class == "DecodeError"
    assert letter.status == "400"
    assert letter.replay_count == 2
    assert letter.failed_at == FAILED_AT
    assert letter.origin == ("autopilot.email-events", "2", "42")
    assert letter.target == ReplayTarget("source", "intake")


def test_failure_time_falls_back_to_the_record_timestamp() -> None:
    assert _letter(failed_at=None).failed_at == datetime(2026, 1, 1, tzinfo=UTC)


def test_line_and_summary() -> None:
    letter = _letter(replays=1)
    row = letter.row()
    assert row[:4] == (
        "2026-11-20 08:15:00",
        "autopilot.email-events[2]@42",  # the input, as the logs name it
        "source/intake",
        "DecodeError 400",
    )
    assert row[4:8] == ("-", "-", "1", "1@7")  # no message id or contact in "{not json"
    assert row[8] == "not JSON: unexpected character"  # newlines folded
    assert letter.line() == "  ".join(row)
    summary = letter.summary()
    assert summary["partition"] == 1
    assert summary["offset"] == 7
    assert summary["topic_offset"] == 42
    assert summary["input"] == "autopilot.email-events[2]@42"
    assert summary["status"] == 400
    assert summary["replay_count"] == 1
    assert summary["key"] == "k"
    assert (summary["message_id"], summary["contact"]) == (None, None)


def test_long_messages_are_truncated_in_lines() -> None:
    letter = _letter(extra=[(H.MESSAGE, b"x" * 500)])
    assert letter.line().endswith("x" * 97 + "...")


_CALL = orjson.dumps(
    {
        "type": "track",
        "messageId": "m-1",
        "userId": "u-1",
        "context": {"traits": {"email": "Ada@Example.com"}},
    }
)
_EVENT = orjson.dumps(
    {
        "id": "evt_1",
        "contact": {"contact_id": "person_1", "email": "ada@example.com", "user_id": "u-1"},
    }
)
_DESCRIPTOR = b'{"path": "/v1/contact", "message_id": "api-1", "contact": "ada@example.com"}'


@pytest.mark.parametrize(
    ("value", "message_id", "contacts"),
    [
        (_CALL, "m-1", ("Ada@Example.com", "u-1")),
        (
            b'{"type": "identify", "anonymousId": "a-1", "traits": {"email": "b@c.d"}}',
            None,
            ("b@c.d", "a-1"),
        ),
        (_EVENT, "evt_1", ("ada@example.com", "u-1", "person_1")),
        (_DESCRIPTOR, "api-1", ("ada@example.com",)),
        (b"{not json", None, ()),
        (b'["u-1"]', None, ()),
        (b'{"userId": "' + b"u" * 70_000 + b'"}', None, ("u" * 200,)),  # cut at 200
        (b'{"userId": "' + b"u" * 1_100_000 + b'"}', None, ()),  # over 1 MiB: not parsed
    ],
)
def test_message_id_and_contacts_come_from_the_value(
    value: bytes, message_id: str | None, contacts: tuple[str, ...]
) -> None:
    letter = DeadLetter(LetterRef(0, 1), 0, None, value, [])
    assert letter.message_id == message_id
    assert letter.contacts == contacts == contacts_of(parsed_input(value))
    assert letter.contact == (contacts[0] if contacts else None)


def test_the_list_table_aligns_its_columns_under_a_header() -> None:
    rows = [
        DeadLetter(LetterRef(0, 3), 0, b"u-1", _CALL, [(H.TOPIC, b"segment.calls")]).row(),
        _letter(12).row(),
    ]
    header, *lines = table(rows)
    assert header.split()[:4] == ["FAILED", "AT", "(UTC)", "INPUT"]
    for column, name in enumerate(("INPUT", "MESSAGE ID", "CONTACT", "LETTER", "REASON")):
        start = header.index(name)
        for line, row in zip(lines, rows, strict=True):
            cell = row[(1, 4, 5, 7, 8)[column]]
            assert line[start : start + len(cell)] == cell, (name, line)
    assert "m-1" in lines[0]
    assert "Ada@Example.com" in lines[0]


# --- filters ---------------------------------------------------------------------------------


def test_empty_filters_match_everything() -> None:
    assert Filters().matches(_letter())


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (Filters(topics=("autopilot.email-events",)), True),
        (Filters(topics=("segment.calls",)), False),
        (Filters(topics=("segment.calls", "autopilot.email-events")), True),
        (Filters(error_classes=("DecodeError",)), True),
        (Filters(error_classes=("ValidationError",)), False),
        (Filters(pipelines=("source",)), True),
        (Filters(pipelines=("source/intake",)), True),
        (Filters(pipelines=("source/map",)), False),
        (Filters(pipelines=("destination",)), False),
        (Filters(since=FAILED_AT), True),  # inclusive
        (Filters(since=FAILED_AT + timedelta(milliseconds=1)), False),
        (Filters(until=FAILED_AT), False),  # exclusive
        (Filters(until=FAILED_AT + timedelta(milliseconds=1)), True),
        (Filters(topics=("autopilot.email-events",), error_classes=("UnexpectedError",)), False),
    ],
)
def test_filters(filters: Filters, expected: bool) -> None:
    assert filters.matches(_letter()) is expected


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (Filters(message_ids=("m-1",)), True),
        (Filters(message_ids=("m-2", "m-1")), True),
        (Filters(message_ids=("m-2",)), False),
        (Filters(contacts=("ada@example.com",)), True),  # emails in any case
        (Filters(contacts=("u-1",)), True),
        (Filters(contacts=("the-key",)), True),  # the Kafka key
        (Filters(contacts=("U-2", "u-1")), True),
        (Filters(contacts=("u-2",)), False),
        (Filters(message_ids=("m-1",), contacts=("u-2",)), False),
    ],
)
def test_filters_by_message_id_and_contact(filters: Filters, expected: bool) -> None:
    letter = DeadLetter(LetterRef(0, 1), 0, b"the-key", _CALL, [(H.TOPIC, b"segment.calls")])
    assert filters.matches(letter) is expected


# --- header rewriting ------------------------------------------------------------------------


def test_replay_headers_keep_the_producers_and_first_failure_only() -> None:
    letter = _letter(
        replays=1,
        extra=[(REPLAY_TARGET, b"stale/target"), (ORIGIN_PREFIX + "topic", b"stale")],
    )
    rewritten = replay_headers(letter.headers, ReplayTarget("source", "intake"))
    assert rewritten == [
        ("trace-id", b"abc"),
        ("__autopilot.kind", b"email-event"),
        (H.FIRST_FAILURE, b"2026-11-01T00:00:00.000+00:00"),
        (ORIGIN_PREFIX + "topic", b"autopilot.email-events"),
        (ORIGIN_PREFIX + "partition", b"2"),
        (ORIGIN_PREFIX + "offset", b"42"),
        (ORIGIN_PREFIX + "timestamp", b"1700000000000"),
        (H.REPLAY_COUNT, b"2"),
        (REPLAY_TARGET, b"source/intake"),
    ]


def test_a_first_replay_counts_one_and_garbled_counts_read_as_zero() -> None:
    for letter in (_letter(), _letter(extra=[(H.REPLAY_COUNT, b"many")])):
        rewritten = replay_headers(letter.headers, ReplayTarget("source", "intake"))
        assert header(rewritten, H.REPLAY_COUNT) == b"1"


def test_a_hand_made_letter_without_provenance_gets_no_origin() -> None:
    headers = [(H.PIPELINE, b"source"), (H.STAGE, b"intake")]
    rewritten = replay_headers(headers, ReplayTarget("source", "intake"))
    assert [k for k, _ in rewritten] == [H.REPLAY_COUNT, REPLAY_TARGET]


def test_target_of_a_letter_the_retry_stage_wrote_is_the_target_it_was_given() -> None:
    letter = _letter(pipeline="replay", stage="retry", extra=[(REPLAY_TARGET, b"delivery/deliver")])
    assert letter.target == ReplayTarget("delivery", "deliver")
    assert _letter(pipeline="replay", stage="retry").target is None
    assert _letter(pipeline="", stage="intake").target is None


@pytest.mark.parametrize("text", ["source", "/intake", "source/", "a/b/c"])
def test_replay_target_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="pipeline"):
        ReplayTarget.parse(text)


# --- the replay plan -------------------------------------------------------------------------


def test_plan_sorts_letters_into_replays_and_skips() -> None:
    fresh = _letter(1, input_offset=1)
    again = _letter(2, input_offset=2, replays=2)
    exhausted = _letter(3, input_offset=3, replays=3)
    no_stage = DeadLetter(LetterRef(0, 4), 0, None, b"x", [(H.TOPIC, b"t")])
    superseded = _letter(5, input_offset=5)
    latest = {
        ("autopilot.email-events", "2", "5"): 1,
        ("autopilot.email-events", "2", "1"): 0,
    }
    plan = plan_replay(
        [fresh, again, exhausted, no_stage, superseded],
        retry_topic="autopilot-worker.retry",
        max_replays=3,
        latest_replay=latest,
    )
    assert [item.letter for item in plan.replays] == [fresh, again]
    assert [item.replay_number for item in plan.replays] == [1, 3]
    assert plan.at_max_replays == [exhausted]
    assert plan.without_target == [no_stage]
    assert plan.superseded == [superseded]
    record = plan.replays[0].record
    assert record.topic == "autopilot-worker.retry"
    assert (record.key, record.value) == (b"k", b"{not json")
    assert header(record.headers, REPLAY_TARGET) == b"source/intake"
    tally = ReplayTally()
    tally.add(plan)
    tally.add(plan)
    assert tally.replays == 4
    assert tally.skipped_text(3) == (
        "skipped 2 at --max-replays 3, 2 superseded by a later replay, "
        "2 without a stage to replay through"
    )


def test_plan_without_latest_counts_supersedes_nothing() -> None:
    plan = plan_replay([_letter()], retry_topic="r", max_replays=1)
    assert len(plan.replays) == 1
    assert plan_replay([_letter(replays=1)], retry_topic="r", max_replays=1).replays == []


def test_classify_gives_the_target_or_the_first_reason_to_skip() -> None:
    latest = {("autopilot.email-events", "2", "42"): 2}
    no_stage = DeadLetter(LetterRef(0, 4), 0, None, b"x", [(H.TOPIC, b"t")])
    assert classify(_letter(replays=2), max_replays=3, latest_replay=latest) == ReplayTarget(
        "source", "intake"
    )
    assert classify(_letter(replays=1), max_replays=3, latest_replay=latest) is Skip.SUPERSEDED
    assert classify(_letter(replays=1), max_replays=3) == ReplayTarget("source", "intake")
    # a letter at --max-replays is refused whether or not a later one supersedes it
    assert classify(_letter(replays=1), max_replays=1, latest_replay=latest) is Skip.AT_MAX_REPLAYS
    assert classify(no_stage, max_replays=0, latest_replay=latest) is Skip.WITHOUT_TARGET
    # another input message (other offset) is not superseded by this one's count
    assert classify(_letter(input_offset=43), max_replays=3, latest_replay=latest) == ReplayTarget(
        "source", "intake"
    )


def _dead_letter_topic() -> tuple[list[DeadLetter], set[LetterRef]]:
    """A dead-letter topic's letters in offset order, and which of them a filter selects."""
    no_stage = DeadLetter(LetterRef(1, 90), 0, None, b"x", [(H.TOPIC, b"t")])
    no_origin = DeadLetter(
        LetterRef(1, 91), 0, None, b"x", [(H.PIPELINE, b"source"), (H.STAGE, b"intake")]
    )
    letters = [
        _letter(1, input_offset=1),  # superseded by 4
        _letter(2, input_offset=2),  # the latest of message 2
        _letter(3, input_offset=3, replays=1),  # superseded by 6 (not selected, but later)
        _letter(4, input_offset=1, replays=1),  # the latest of message 1, twice (a duplicate)
        _letter(5, input_offset=1, replays=1),
        _letter(6, input_offset=3, replays=2),
        _letter(7, input_offset=5, replays=3),  # at --max-replays 3
        _letter(8, input_offset=6, replays=3),  # at --max-replays, and it supersedes 9
        _letter(9, input_offset=6, replays=1),
        no_stage,
        no_origin,
    ]
    selected = {letter.ref for letter in letters} - {LetterRef(1, 6)}
    return letters, selected


@pytest.mark.parametrize("reverse", [False, True])
def test_the_census_counts_what_plan_replay_replays_without_keeping_letters(reverse: bool) -> None:
    letters, selected = _dead_letter_topic()
    census = ReplayCensus(3)
    for letter in reversed(letters) if reverse else letters:
        census.add(letter, selected=letter.ref in selected)
    events = "autopilot.email-events"
    assert census.latest == {
        (events, "2", "1"): 1,
        (events, "2", "2"): 0,
        (events, "2", "3"): 2,
        (events, "2", "5"): 3,
        (events, "2", "6"): 3,
    }
    chosen = [letter for letter in letters if letter.ref in selected]
    plan = plan_replay(chosen, retry_topic="r", max_replays=3, latest_replay=census.latest)
    assert [item.letter.ref.offset for item in plan.replays] == [2, 4, 5, 91]
    assert [letter.ref.offset for letter in plan.superseded] == [1, 3, 9]
    assert census.replays == len(plan.replays)


def test_a_census_that_supersedes_nothing_counts_every_letter_due() -> None:
    letters, selected = _dead_letter_topic()
    census = ReplayCensus(3, superseding=False)
    for letter in letters:
        census.add(letter, selected=letter.ref in selected)
    assert census.latest == {}
    chosen = [letter for letter in letters if letter.ref in selected]
    plan = plan_replay(chosen, retry_topic="r", max_replays=3, latest_replay=census.latest)
    assert plan.superseded == []
    assert census.replays == len(plan.replays) == 7


# --- progress --------------------------------------------------------------------------------


def test_progress_on_a_pipe_writes_a_line_per_tenth() -> None:
    stream = io.StringIO()
    progress = Progress(20, stream, "replaying", width=10)
    progress.start()
    for _ in range(20):
        progress.advance()
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "replaying [..........] 0/20   0%"
    assert lines[-1] == "replaying [##########] 20/20 100%"
    assert len(lines) == 11


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_note_on_a_pipe_is_a_line_between_the_bars_lines() -> None:
    stream = io.StringIO()
    progress = Progress(1, stream, "replaying", width=4)
    progress.note("before\n")
    progress.start()
    progress.note("skipping 0@1\n")
    progress.advance()
    progress.finish()
    assert stream.getvalue().splitlines() == [
        "before",
        "replaying [....] 0/1   0%",
        "skipping 0@1",
        "replaying [####] 1/1 100%",
    ]


def test_a_note_on_a_terminal_clears_the_bar_and_redraws_it_below() -> None:
    stream = _Tty()
    progress = Progress(2, stream, "replaying", width=4)
    progress.note("before\n")
    progress.start()
    progress.advance()
    progress.note("skipping 0@1\n")
    progress.advance()
    progress.finish()
    bar = "replaying [##..] 1/2  50%"
    assert stream.getvalue() == (
        "before\nreplaying [....] 0/2   0%\r" + bar
        + "\r" + " " * len(bar) + "\rskipping 0@1\n" + bar
        + "\rreplaying [####] 2/2 100%\n"
    )  # fmt: skip


def test_progress_on_a_terminal_redraws_in_place() -> None:
    stream = _Tty()
    progress = Progress(2, stream, "replaying", width=4)
    progress.start()
    progress.advance()
    progress.advance()
    progress.finish()
    assert stream.getvalue() == (
        "replaying [....] 0/2   0%\rreplaying [##..] 1/2  50%\rreplaying [####] 2/2 100%\n"
    )
