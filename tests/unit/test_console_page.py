"""The console's failures, replays and page, without Kafka: what a dead letter shows, masked,
what a replay became, and the page rendered from them."""

from __future__ import annotations

import base64
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest
from pydantic import SecretStr

from tests.unit.doubles import RecordingSender
from worker.console.failures import PAYLOAD_CHARS, Failure, FailureRing, contact_of
from worker.console.page import DeliveryView, PageData, PipelineView, render
from worker.console.replays import Replay, ReplayLog, ReplayState, ReplayWatcher
from worker.console.routes import page_masker
from worker.errors import DecodeError, DeliveryRejected, WorkerError
from worker.pipeline.breaker import Breaker
from worker.pipeline.dead_letters import dead_letter
from worker.pipeline.letters import DeadLetter, LetterRef
from worker.pipeline.records import InboundMessage
from worker.pipeline.replay import ReplayTarget
from worker.pipeline.stage import Stage
from worker.runtime.history import CountHistory, running_totals
from worker.settings import MASK, Settings
from worker.topics import TopicNames

API_KEY = "apk-PAGE-8c1d2e3f4a"
WRITE_KEY = "wk-PAGE-5b6c7d8e9f"
SETTINGS = Settings(
    autopilot_api_key=SecretStr(API_KEY), segment_write_keys=SecretStr(f"{WRITE_KEY},other-key")
)
MASKED = page_masker(SETTINGS)


def _letter(
    value: bytes,
    error: WorkerError,
    *,
    offset: int = 0,
    input_offset: int = 42,
    pipeline: str = "source",
    stage: str = "intake",
    replays: int | None = None,
    attempts: str | None = None,
) -> DeadLetter:
    headers = [("__autopilot.errors.replay.count", str(replays).encode())] if replays else []
    message = InboundMessage("input", 1, input_offset, 1_700_000_000_000, b"k", value, headers)
    record = dead_letter(
        message,
        error,
        topic="dlq",
        pipeline=pipeline,
        stage=stage,
        secrets=(API_KEY,),
        attempts=attempts,
    )
    return DeadLetter(LetterRef(0, offset), 1_700_000_000_000, record.key, value, record.headers)


@pytest.mark.parametrize(
    ("payload", "contact"),
    [
        ({"contact": "ada@example.com", "message_id": "m"}, "ada@example.com"),
        ({"contact": {"contact_id": "person_1", "email": "ada@example.com"}}, "ada@example.com"),
        ({"contact": {"contact_id": "person_1"}}, "person_1"),
        (
            {"type": "identify", "userId": "u-1", "traits": {"email": "ada@example.com"}},
            "ada@example.com",
        ),
        (
            {"type": "track", "userId": "u-1", "properties": {"email": "t@example.com"}},
            "t@example.com",
        ),
        ({"type": "page", "context": {"traits": {"email": "c@example.com"}}}, "c@example.com"),
        ({"type": "track", "userId": "u-1"}, "u-1"),
        ({"type": "track", "anonymousId": "anon-1"}, "anon-1"),
        ({"type": "track"}, None),
        ([1, 2], None),
    ],
)
def test_the_contact_of_each_kind_of_payload(payload: object, contact: str | None) -> None:
    assert contact_of(payload) == contact


def test_a_failure_shows_its_headers_id_contact_and_pretty_payload() -> None:
    value = orjson.dumps({"messageId": "m-1", "type": "identify", "userId": "u-1", "traits": {}})
    failure = Failure.of(_letter(value, DecodeError("no email")), MASKED)
    assert failure.ref == LetterRef(0, 0)
    assert (failure.pipeline, failure.stage) == ("source", "intake")
    assert (failure.error_class, failure.status, failure.message) == (
        "DecodeError",
        "400",
        "no email",
    )
    assert (failure.message_id, failure.contact) == ("m-1", "u-1")
    assert failure.origin == ("input", "1", "42")
    assert failure.attempts is None
    assert failure.payload_encoding == "json"
    assert failure.payload.startswith('{\n  "messageId": "m-1"')
    assert failure.payload_bytes == len(value)
    assert failure.failed_at.tzinfo is not None


def test_every_secret_is_masked_as_is_escaped_and_encoded() -> None:
    escaped = "".join(f"\\u{ord(c):04x}" for c in WRITE_KEY)
    basic = base64.b64encode(f"{API_KEY}:".encode()).decode()
    value = (
        f'{{"messageId": "m-2", "userId": "u", "note": "{API_KEY}", '
        f'"escaped": "{escaped}", "auth": "Basic {basic}"}}'
    ).encode()
    error = DeliveryRejected(f"refused {API_KEY}", http_status=400, body=f"echo {WRITE_KEY}")
    failure = Failure.of(
        _letter(
            value, error, pipeline="delivery", stage="deliver", attempts=f'[{{"e": "{API_KEY}"}}]'
        ),
        MASKED,
    )
    shown = " ".join(
        str(v) for v in (failure.payload, failure.message, failure.response_body, failure.contact)
    )
    for secret in (API_KEY, WRITE_KEY, basic, basic.rstrip("=")):
        assert secret not in shown
    assert shown.count(MASK) >= 4
    assert failure.attempts == 1


def test_a_large_payload_is_cut_and_bytes_shown_as_base64() -> None:
    big = orjson.dumps({"id": "e-1", "blob": "x" * (PAYLOAD_CHARS * 2)})
    failure = Failure.of(_letter(big, DecodeError("big")), MASKED)
    assert len(failure.payload) == PAYLOAD_CHARS
    assert failure.truncated
    raw = Failure.of(_letter(b"\xff\xfe{", DecodeError("bytes")), MASKED)
    assert raw.payload_encoding == "base64"
    assert raw.payload == base64.b64encode(b"\xff\xfe{").decode()
    assert raw.message_id is None


def _failure(offset: int, *, email: str, replays: int | None = None, minute: int = 0) -> Failure:
    value = orjson.dumps({"id": f"evt_{offset}", "contact": {"email": email}})
    failure = Failure.of(_letter(value, DecodeError("bad"), offset=offset, replays=replays), MASKED)
    moment = datetime(2026, 11, 20, 10, minute, tzinfo=UTC)
    return Failure(**{**{f: getattr(failure, f) for f in Failure.__slots__}, "failed_at": moment})


def test_the_ring_keeps_the_latest_newest_first_and_searches_ids_and_contacts() -> None:
    ring = FailureRing(size=3)
    for n in range(5):
        ring.add(_failure(n, email=f"Person{n}@Example.com", minute=n))
    assert len(ring) == 3
    assert [f.ref.offset for f in ring.latest()] == [4, 3, 2]
    assert [f.ref.offset for f in ring.latest("person3@example")] == [3]
    assert [f.ref.offset for f in ring.latest("EVT_4")] == [4]
    assert ring.latest("nobody") == []
    assert ring.get(LetterRef(0, 3)) is not None
    assert ring.get(LetterRef(0, 0)) is None


def test_the_ring_keeps_the_latest_by_failure_time_whatever_order_they_come_in() -> None:
    ring = FailureRing(size=3)
    for n in (4, 0, 9, 2, 7, 1):
        ring.add(_failure(n, email="p@example.com", minute=n))
    assert [f.ref.offset for f in ring.latest()] == [9, 7, 4]
    assert [f.ref.offset for f in ring] == [4, 7, 9]


class _CountingMask:
    """The page's masker, counting the texts it masks: a `Failure` made masks at least one."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, text: str) -> str:
        self.calls += 1
        return MASKED(text)


def test_letters_in_the_ring_are_made_failures_only_when_asked_for_and_once() -> None:
    mask = _CountingMask()
    ring = FailureRing(size=3)
    letters = [
        _letter(
            orjson.dumps({"id": f"evt_{n}", "contact": {"email": f"p{n}@example.com"}}),
            DecodeError(f"bad {API_KEY}"),
            offset=n,
            input_offset=n,
        )
        for n in range(6)
    ]
    for letter in letters:
        ring.add_letter(letter, mask)
    assert (len(ring), mask.calls) == (3, 0)  # six read, none parsed or masked
    log = ReplayLog()
    log.note_failures(ring)  # no replay to follow: still nothing made
    assert mask.calls == 0
    origin = letters[4].origin
    assert origin is not None
    later = ring.later_failures({origin})
    assert list(later) == [origin]
    after_one = mask.calls
    assert after_one > 0
    shown = ring.latest()
    assert [f.ref.offset for f in shown] == [5, 4, 3]
    assert shown[0] == Failure.of(letters[5], MASKED)  # the same as made at once
    assert API_KEY not in shown[0].message
    assert ring.get(LetterRef(0, 4)) is later[origin]  # made once, then kept
    made = mask.calls
    assert ring.latest() == shown
    assert mask.calls == made


class _Record:
    """A record of the dead-letter topic as aiokafka gives it, counting who reads its headers
    (reading a letter out starts there)."""

    read_out = 0

    def __init__(self, letter: DeadLetter, partition: int) -> None:
        self.partition, self.offset = partition, letter.ref.offset
        self.timestamp, self.key, self.value = letter.timestamp_ms, letter.key, letter.value
        self._headers = letter.headers

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        _Record.read_out += 1
        return self._headers


def test_records_are_read_out_when_the_ring_is_asked_the_latest_of_each_partition() -> None:
    _Record.read_out = 0
    ring = FailureRing(size=3)
    for partition in (0, 1):
        for n in range(5):
            value = orjson.dumps({"id": f"evt_{partition}_{n}"})
            letter = _letter(value, DecodeError("bad"), offset=n, input_offset=10 * partition + n)
            ring.add_record(_Record(letter, partition), MASKED)
    assert _Record.read_out == 0
    assert len(ring) == 3  # the latest three of the six read out (three a partition)
    assert _Record.read_out == 6
    assert [(f.ref.offset, f.message_id) for f in ring.latest()] == [
        (4, "evt_1_4"),
        (3, "evt_1_3"),
        (2, "evt_1_2"),
    ]
    assert _Record.read_out == 6


@pytest.mark.parametrize("way", ["letter", "record"])
def test_a_large_letter_is_made_a_failure_as_it_is_read_so_the_ring_keeps_it_cut(
    way: str,
) -> None:
    mask = _CountingMask()
    ring = FailureRing()
    big = orjson.dumps({"id": "evt_big", "contact": {"email": "p@example.com"}, "x": "y" * 5_000})
    letter = _letter(big, DecodeError("big"))
    if way == "letter":
        ring.add_letter(letter, mask)
    else:
        ring.add_record(_Record(letter, 0), mask)
    assert mask.calls > 0
    (failure,) = ring.latest()
    assert failure.payload_bytes == len(big)
    assert len(failure.payload) == PAYLOAD_CHARS


def _replay(ref: int, *, target: str = "source/intake", message_id: str = "evt_0") -> Replay:
    return Replay(
        ref=LetterRef(0, ref),
        target=ReplayTarget.parse(target),
        number=1,
        at=1_800_000_000.0,
        retry=(0, 5),
        origin=("input", "1", "42"),
        message_id=message_id,
        contact="person0@example.com",
    )


def _state(replay: Replay) -> ReplayState:
    """The state now (a call, so that mypy does not hold on to an earlier assert's)."""
    return replay.state


def test_a_replay_that_failed_again_points_at_its_new_letter() -> None:
    ring = FailureRing()
    ring.add(_failure(0, email="p@example.com"))
    log = ReplayLog()
    log.add(replay := _replay(0))
    log.note_failures(ring)
    assert _state(replay) is ReplayState.WAITING  # only the letter it replayed
    ring.add(_failure(7, email="p@example.com", replays=1, minute=5))
    log.note_failures(ring)
    assert _state(replay) is ReplayState.FAILED_AGAIN
    assert replay.again == LetterRef(0, 7)
    assert replay.detail.startswith("DecodeError 400: bad")


def test_done_turns_into_failed_again_when_a_later_stage_fails_the_replay() -> None:
    ring = FailureRing()
    log = ReplayLog()
    log.add(replay := _replay(0))
    replay.state = ReplayState.DONE
    ring.add(_failure(9, email="p@example.com", replays=1, minute=5))
    log.note_failures(ring)
    assert _state(replay) is ReplayState.FAILED_AGAIN


def test_a_replayed_delivery_is_delivered_by_its_outcome_written_after_the_replay() -> None:
    log = ReplayLog()
    log.add(replay := _replay(0, target="delivery/deliver", message_id="m-404"))
    delivered = {"message_id": "m-404", "outcome": "delivered", "status": 200, "attempts": 1}
    log.note_outcome(delivered, written_ms=int(replay.at * 1000) - 60_000)  # an older outcome
    assert _state(replay) is ReplayState.WAITING
    log.note_outcome({**delivered, "message_id": "m-other"}, written_ms=int(replay.at * 1000))
    assert _state(replay) is ReplayState.WAITING
    log.note_outcome(delivered, written_ms=int(replay.at * 1000) + 500)
    assert _state(replay) is ReplayState.DELIVERED
    assert replay.detail == "status 200 after 1 attempt(s)"
    assert log.pending() == []
    assert log.of(LetterRef(0, 0)) is replay


def test_a_replayed_delivery_is_told_by_its_own_apis_outcome() -> None:
    log = ReplayLog()
    log.add(ortto := _replay(0, target="delivery-ortto/deliver", message_id="m-1"))
    log.add(autopilot := _replay(1, target="delivery/deliver", message_id="m-1"))
    assert (ortto.backend, autopilot.backend) == ("ortto", "autopilot")
    written = int(ortto.at * 1000)
    # Autopilot's outcome of the same message (a result of before there were two: no backend)
    log.note_outcome({"message_id": "m-1", "outcome": "delivered", "status": 200}, written)
    assert (_state(ortto), _state(autopilot)) == (ReplayState.WAITING, ReplayState.DELIVERED)
    refused = {"backend": "ortto", "message_id": "m-1", "outcome": "dead_lettered", "status": 400}
    log.note_outcome({**refused, "error_class": "DeliveryRejected", "error": "no field"}, written)
    assert _state(ortto) is ReplayState.FAILED_AGAIN
    assert ortto.detail == "DeliveryRejected 400: no field"


def _stage(name: str, stage: str) -> Stage:
    return Stage(
        name,
        stage,
        lambda m: [],
        RecordingSender(),
        "dlq",
        Breaker(window=10, min_messages=10, max_ratio=0.5),
    )


def _page(failures: list[Failure], replays: list[Replay] | None = None, **changes: object) -> str:
    history = CountHistory()
    intake = _stage("source", "intake")
    intake.stats.consumed, intake.stats.produced = 9, 6
    intake.stats.skipped["test_delivery"] = 1
    intake.stats.dead_lettered_status["DecodeError", "400"] = 2
    history.record(
        running_totals(
            [intake],
            {
                ("autopilot", "delivered", "200"): 3,
                ("autopilot", "dead_lettered", "404"): 1,
                ("ortto", "delivered", "200"): 7,
            },
            requests={"autopilot": 4, "ortto": 1},
        )
    )
    hour = history.window(3600)
    replays = replays or []
    data = PageData(
        app_id="app<1>",
        now=history.started_at,
        started_at=history.started_at,
        window="hour",
        hour=hour,
        day=Counter(hour),
        series=history.series(3600, 60),
        pipelines=[PipelineView("source", ["intake", "map"], None, {"email-events": 3})],
        deliveries=[
            DeliveryView(
                runs=True,
                enabled=True,
                backend="Autopilot",
                paused_since=1_800_000_000.0,
                rate_in_use=0.5,
                rate_limit=5.0,
                waited_s_hour=1.25,
                lag={},
            )
        ],
        failures=failures,
        page=1,
        pages=1,
        query="",
        scope="recent",
        search_note="",
        ring_note="The latest dead letters",
        replays=replays,
        replay_of={r.ref: r for r in replays},
        later={},
        csrf="123.abc",
        nonce="NONCE",
    )
    data = PageData(**{**data.__dict__, **changes})
    return render(data)


def _row(page: str, marker: str) -> str:
    start = page.index(marker)
    return page[start : page.index("</tr>", start)]


def test_the_page_counts_per_stage_over_the_hour_and_day() -> None:
    page = _page([])
    assert '<td class="num">9</td><td class="num">9</td>' in _row(
        page, 'data-count="source:intake:in"'
    )
    assert ">written<" in _row(page, 'data-count="source:intake:out"')
    assert ">6<" in _row(page, 'data-count="source:intake:out"')
    assert "skipped: test_delivery" in _row(
        page, 'data-count="source:intake:skipped:test_delivery"'
    )
    dead = _row(page, 'data-count="source:intake:dead_lettered:DecodeError:400"')
    assert "dead-lettered: DecodeError 400" in dead
    assert ">2<" in dead
    assert ">3<" in _row(page, 'data-count="delivery:delivered:200"')
    assert "paused" in page
    assert "0.50 requests/s over the last minute of 5/s allowed" in page
    assert "<svg" in page
    assert "app&lt;1&gt;" in page
    assert 'data-pending="no"' in page


def test_a_card_per_destination_api_each_with_its_own_counts() -> None:
    ortto = DeliveryView(
        runs=True,
        enabled=True,
        backend="Ortto",
        paused_since=None,
        rate_in_use=None,
        rate_limit=10.0,
        waited_s_hour=0.0,
        lag={"ortto.requests": 2},
        name="ortto",
        pipeline="delivery-ortto",
        rate_setting="ORTTO_RATE_LIMIT",
    )
    autopilot = DeliveryView(
        runs=True,
        enabled=False,
        backend="Autopilot",
        paused_since=None,
        rate_in_use=None,
        rate_limit=5.0,
        waited_s_hour=0.0,
        lag={},
    )
    page = _page([], deliveries=[autopilot, ortto])
    first = page[page.index('id="destination"') : page.index('id="destination-ortto"')]
    second = page[page.index('id="destination-ortto"') :]
    assert "not enabled: no API key" in first
    assert 'data-count="delivery:delivered:200"' in first
    assert ">3<" in _row(first, 'data-count="delivery:delivered:200"')
    assert "delivery-ortto:" not in first
    assert "Ortto (destination)" in second
    assert '<span class="badge ok">running</span>' in second
    assert ">7<" in _row(second, 'data-count="delivery-ortto:delivered:200"')
    assert "of 10/s allowed (ORTTO_RATE_LIMIT)" in second
    assert "ortto.requests <b" in second


def test_everything_from_a_message_is_escaped() -> None:
    value = orjson.dumps(
        {"messageId": "<script>alert(1)</script>", "userId": '"><img src=x onerror=alert(2)>'}
    )
    failure = Failure.of(_letter(value, DecodeError("</td><script>alert(3)</script>")), MASKED)
    page = _page([failure])
    assert page.count("<script") == 1  # the page's own
    assert "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;/td&gt;&lt;script&gt;alert(3)" in page


def test_a_failure_row_shows_what_its_replay_became() -> None:
    failure = _failure(0, email="p@example.com")
    replay = _replay(0)
    replay.state, replay.again, replay.detail = ReplayState.FAILED_AGAIN, LetterRef(0, 7), "X 400"
    row = _row(_page([failure], [replay]), 'data-ref="0@0"')
    assert 'data-state="failed again"' in row
    assert "replay 1: failed again as 0@7" in row
    assert 'value="0@0"' in row
    waiting = _replay(0)
    assert 'data-pending="yes"' in _page([failure], [waiting])


class _Feed:
    """The failure feed as the watcher reads it: a ring, end offsets, how far it read."""

    def __init__(self) -> None:
        self.ring = FailureRing()
        self.ends = {0: 10}
        self.read = {0: 9}

    async def end_offsets(self) -> dict[int, int]:
        return dict(self.ends)

    def read_up_to(self, ends: dict[int, int]) -> bool:
        return all(self.read.get(p, 0) >= end for p, end in ends.items())


async def test_a_replay_is_done_once_committed_past_and_the_dead_letters_read_after_that() -> None:
    feed = _Feed()
    log = ReplayLog()
    watcher = ReplayWatcher(
        SETTINGS,
        TopicNames.from_settings(SETTINGS),
        "app",
        log,
        feed,  # type: ignore[arg-type]
    )
    committed = {0: 5}

    async def group_committed(partitions: set[int]) -> dict[int, int]:
        return {p: committed.get(p, -1) for p in partitions}

    watcher._committed = group_committed  # type: ignore[method-assign]
    log.add(source := _replay(0))  # on the retry topic at 0@5
    log.add(delivery := _replay(1, target="delivery/deliver", message_id="m-1"))
    await watcher.check()
    assert (_state(source), _state(delivery)) == (ReplayState.WAITING, ReplayState.WAITING)
    committed[0] = 6  # the retry stage committed past both
    await watcher.check()
    assert source.dead_letter_ends == {0: 10}
    assert _state(source) is ReplayState.WAITING  # the dead letters not read that far yet
    feed.read[0] = 10
    await watcher.check()
    assert _state(source) is ReplayState.DONE
    assert source.detail == "ran through source/intake without failing"
    assert _state(delivery) is ReplayState.IN_DELIVERY
