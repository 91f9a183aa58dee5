"""What the reliability suite feeds the worker, each input with the fate it must meet.

Every input carries the header `TRACE_HEADER` (a unique id): dead letters keep the producer's
headers, so a dead letter is traced to its input by it even when its bytes are not JSON. Outputs
are traced by messageId: a source track carries `autopilot-<event id>`, a request descriptor the
Segment call's `messageId`.

`oracle` says, with the worker's own pure functions and no Kafka, what the worker must do with
one input. The generators use it only to check themselves (an input meant to be bad that the
oracle accepts is a generator bug and raises); the tests then check what the worker did with
the bytes on a real broker, under kills, restarts and load.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

import orjson

from tests.kafkautil import Record
from worker.backends.autopilot import AutopilotBackend, AutopilotConfig
from worker.destination.mapping import accept_call, parse_call
from worker.errors import SkipMessage
from worker.source.mapping import email_event_to_track, parse_email_event

INTEGRATIONS = AutopilotBackend().integration_names

__all__ = [
    "EMAIL_EVENTS",
    "SEGMENT_CALLS",
    "TRACE_HEADER",
    "TRIGGER_ID",
    "Fate",
    "Input",
    "fuzz_inputs",
    "mixed_inputs",
    "oracle",
]

TRACE_HEADER: Final = "reliability.trace"
TRIGGER_ID: Final = "0001"
"""The worker under test runs with AUTOPILOT_TRIGGER_ID set to this, so every track triggers."""

#: The input topics, by the name of the worker setting (environment variable) that names them.
EMAIL_EVENTS: Final = "TOPIC_EMAIL_EVENTS"
SEGMENT_CALLS: Final = "TOPIC_SEGMENT_CALLS"

_CONFIG: Final = AutopilotConfig(trigger_id=TRIGGER_ID)
_TYPES: Final = (
    "email_opened",
    "email_clicked",
    "email_delivered",
    "email_bounced",
    "Email Opened",
    "email_unsubscribed",
    "email_replied",
    "email_marked_as_spam",
)


class Fate(StrEnum):
    TRACK = "track"
    """One Segment track on the tracks topic, messageId `autopilot-<id>`."""
    REQUEST = "request"
    """One request descriptor on the requests topic, message_id = the call's messageId."""
    DEAD_LETTER = "dead_letter"
    """One dead letter: the input's key, value and headers, and the reason."""
    SKIP = "skip"
    """Acknowledged, nothing emitted (the generators never make these)."""


@dataclass(frozen=True, slots=True)
class Input:
    trace: str
    topic: str
    """`EMAIL_EVENTS` or `SEGMENT_CALLS`: the setting that names its topic."""
    key: bytes | None
    value: bytes
    fate: Fate
    message_id: str | None
    """The messageId of its output; None for a dead letter."""
    kind: str
    """What the generator meant it to be, e.g. `event.valid` or `fuzz.deep_nesting`."""
    extra_headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return [*self.extra_headers, (TRACE_HEADER, self.trace.encode())]

    def record(self) -> Record:
        return (self.key, self.value, self.headers)


def oracle(topic: str, value: bytes) -> Fate:
    """What the worker must do with `value` on `topic`, nothing learned from earlier inputs."""
    now = datetime.now(UTC)
    if topic == EMAIL_EVENTS:
        try:
            email_event_to_track(
                parse_email_event(value),
                learned_user_id=None,
                received_at=now,
                integration_version="0",
            )
        except SkipMessage:
            return Fate.SKIP
        except Exception:  # the pipeline dead-letters whatever a handler raises
            return Fate.DEAD_LETTER
        return Fate.TRACK
    try:
        call = parse_call(value)
    except Exception:
        return Fate.DEAD_LETTER
    try:
        result = AutopilotBackend(_CONFIG).requests_for(
            accept_call(call, INTEGRATIONS), learned_email=None, audience_state={}
        )
    except SkipMessage:
        return Fate.SKIP
    except Exception:
        return Fate.DEAD_LETTER
    return Fate.REQUEST if result.requests else Fate.SKIP


# -- the mixed stream --------------------------------------------------------------------------


def _email(contact: int) -> str:
    return f"Contact{contact}@Example.com"


def _event(event_id: str, contact: int, n: int) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": event_id,
        "type": _TYPES[n % len(_TYPES)],
        "occurred_at": "2026-11-20T10:15:00+02:00",
        "contact": {"contact_id": f"person_{contact}", "email": _email(contact)},
        "journey": {"id": "campaign_1", "name": "Onboarding"},
        "email": {"id": f"email_{n % 7}", "subject": "Welcome", "transactional": False},
        "link": {"id": "link_1", "url": "https://example.com/pricing"},
    }
    if n % 3 == 0:
        event["contact"]["user_id"] = f"u-{contact}"
    return event


def _identify(message_id: str, user_id: str, email: str | None, n: int) -> dict[str, Any]:
    traits: dict[str, Any] = {"firstName": f"First{n}", "plan": "pro" if n % 2 else "free"}
    if email is not None:
        traits["email"] = email
    return {"type": "identify", "userId": user_id, "messageId": message_id, "traits": traits}


def _track(message_id: str, user_id: str, email: str | None) -> dict[str, Any]:
    properties: dict[str, Any] = {"plan": "pro"}
    if email is not None:
        properties["email"] = email
    return {
        "type": "track",
        "event": "Signed Up",
        "userId": user_id,
        "messageId": message_id,
        "properties": properties,
    }


def _bad_event(n: int, contact: int) -> bytes:
    good = _event(f"bad-{n}", contact, n)
    match n % 5:
        case 0:
            raw = orjson.dumps(good)
            return raw[: len(raw) // 2]
        case 1:
            return orjson.dumps({**good, "type": "email_forwarded"})
        case 2:
            return orjson.dumps({**good, "contact": {"contact_id": "person_x", "email": ""}})
        case 3:
            return orjson.dumps({**good, "occurred_at": "2026-11-20T10:15:00"})
        case _:
            return b"[1, 2, 3]"


def _bad_call(n: int) -> tuple[bytes, bytes]:
    """An invalid Segment call and its key; the last two kinds fail in the map stage."""
    user = f"nobody-{n}"
    match n % 7:
        case 0:
            raw = orjson.dumps(_identify(f"bad-{n}", user, "x@example.com", n))
            return raw[: len(raw) - 3], user.encode()
        case 1:
            return orjson.dumps({"type": "shout", "userId": user, "messageId": "x"}), user.encode()
        case 2:
            return orjson.dumps({"type": "identify", "traits": {"email": "a@b.c"}}), b"anon"
        case 3:
            return orjson.dumps({"type": "track", "userId": user}), user.encode()
        case 4:
            return orjson.dumps({"type": "identify", "userId": {"id": user}}), user.encode()
        case 5:
            return orjson.dumps(_identify(f"bad-{n}", user, None, n)), user.encode()
        case _:
            return orjson.dumps(_track(f"bad-{n}", user, None)), user.encode()


def mixed_inputs(count: int, *, seed: int = 8) -> list[Input]:
    """`count` inputs, about half on each topic, 10% invalid, in a reproducible random order.

    Per 20 inputs: 9 valid email events, 1 invalid one, 5 identifies and 3 tracks (all with an
    email, keyed by userId as Segment keys them), 2 invalid calls (one failing intake, one the
    map stage). Contacts recur, so identities are learned and used across both pipelines.
    """
    rng = random.Random(seed)
    contacts = max(50, count // 20)
    inputs: list[Input] = []
    for n in range(count):
        trace = f"in-{n}"
        contact = rng.randrange(contacts)
        user = f"u-{contact}"
        slot = n % 20
        if slot < 9:
            value = orjson.dumps(_event(f"evt-{n}", contact, n))
            key = _email(contact).lower().encode()
            inputs.append(
                Input(trace, EMAIL_EVENTS, key, value, Fate.TRACK, f"autopilot-evt-{n}", "event")
            )
        elif slot == 9:
            value = _bad_event(n, contact)
            inputs.append(
                Input(trace, EMAIL_EVENTS, None, value, Fate.DEAD_LETTER, None, "event.invalid")
            )
        elif slot < 15:
            value = orjson.dumps(_identify(f"seg-{n}", user, _email(contact), n))
            inputs.append(
                Input(
                    trace, SEGMENT_CALLS, user.encode(), value, Fate.REQUEST, f"seg-{n}", "identify"
                )
            )
        elif slot < 18:
            value = orjson.dumps(_track(f"seg-{n}", user, _email(contact)))
            inputs.append(
                Input(trace, SEGMENT_CALLS, user.encode(), value, Fate.REQUEST, f"seg-{n}", "track")
            )
        else:
            value, key = _bad_call(n)
            kind = "call.invalid.map" if n % 7 >= 5 else "call.invalid.intake"
            inputs.append(Input(trace, SEGMENT_CALLS, key, value, Fate.DEAD_LETTER, None, kind))
    rng.shuffle(inputs)
    _check(inputs)
    return inputs


def _check(inputs: list[Input]) -> None:
    for item in inputs:
        found = oracle(item.topic, item.value)
        if found is not item.fate:
            raise AssertionError(f"generator bug: {item.kind} {item.value[:200]!r} is {found}")


# -- fuzzed bad inputs -------------------------------------------------------------------------

#: The largest fuzzed value: just under the broker's default message.max.bytes (1,048,588) and
#: the test producer's max_request_size (1,048,576), so the broker takes it. Its dead letter is
#: larger by the worker's headers, which the worker's own topics make room for.
HUGE_MAX: Final = 1_040_000


def _wrong_types(rng: random.Random, topic: str, n: int) -> bytes:
    wrong: list[object] = [123, -1.5, True, None, [1, "a"], {"x": {"y": 1}}, "", "\u0000"]
    if topic == EMAIL_EVENTS:
        base = _event(f"fz-{n}", n, n)
        field = rng.choice(["id", "type", "occurred_at", "contact", "email", "link", "test"])
        value = rng.choice(wrong)
        if field == "contact":
            base["contact"] = rng.choice([value, {"contact_id": "p", "email": value}])
        elif field == "email":
            base["email"] = rng.choice([value, {"id": value}])
        elif field == "link":
            base["type"] = "email_clicked"
            base["link"] = rng.choice([value, {"url": value}])
        else:
            base[field] = value
        return orjson.dumps(base)
    call = rng.choice(
        [_identify(f"fz-{n}", f"fz-{n}", "a@example.com", n), _track(f"fz-{n}", f"fz-{n}", None)]
    )
    field = rng.choice(["type", "userId", "traits", "properties", "context", "event", "messageId"])
    call[field] = rng.choice(wrong)
    return orjson.dumps(call)


def _candidate(rng: random.Random, topic: str, n: int, kind: str) -> tuple[bytes, bytes | None]:
    valid: dict[str, Any] = (
        _event(f"fz-{n}", n, n)
        if topic == EMAIL_EVENTS
        else _identify(f"fz-{n}", f"fz-{n}", "a@example.com", n)
    )
    key = rng.choice([None, f"fz-{n}".encode(), rng.randbytes(rng.randrange(1, 40))])
    match kind:
        case "random_bytes":
            return rng.randbytes(rng.randrange(0, 3000)), key
        case "truncated_json":
            raw = orjson.dumps(valid)
            return raw[: rng.randrange(0, len(raw) - 1)], key
        case "wrong_types":
            return _wrong_types(rng, topic, n), key
        case "huge_value":
            size = rng.choice([40_000, 100_000, 300_000, HUGE_MAX])
            # a huge type, or a huge unknown field on an input without a type
            field = rng.choice(["notes", "type"])
            blob = {**valid, field: "x" * size}
            if field == "notes":
                blob.pop("type")
            return orjson.dumps(blob), key
        case "deep_nesting":
            # past orjson's limit of 1024 and pydantic's, now and then far past it
            depth = 50_000 if n % 500 == 3 else rng.choice([300, 1_100, 3_000])
            if rng.random() < 0.5:
                return b"[" * depth + b"]" * depth, key
            # deep inside an otherwise valid input: traits (a call) or the contact (an event)
            field = "traits" if topic == SEGMENT_CALLS else "contact"
            nested = b'{"email":"a@example.com","a":' + b'{"a":' * depth + b"1" + b"}" * depth
            raw = orjson.dumps({**valid, field: "__nest__"})
            return raw.replace(b'"__nest__"', nested + b"}"), key
        case "invalid_utf8":
            raw = orjson.dumps(valid)
            at = rng.randrange(1, len(raw) - 1)
            return raw[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]) + raw[
                at:
            ], key
        case "not_an_object":
            return orjson.dumps(rng.choice([[valid], "text", 42, None, True, [], 1e308])), key
        case _:
            raise ValueError(kind)


FUZZ_KINDS: Final = (
    "random_bytes",
    "truncated_json",
    "wrong_types",
    "deep_nesting",
    "invalid_utf8",
    "not_an_object",
)

"""The kinds taken in turn; every 100th input is a `huge_value` instead."""


def fuzz_inputs(count: int, topic: str, *, seed: int = 8) -> list[Input]:
    """`count` bad inputs for `topic`, the kinds in turn; every one must be dead-lettered.

    Huge values (40 KB to `HUGE_MAX`) are one in 100, so that 10,000 inputs stay near 50 MB.
    """
    rng = random.Random(f"{seed}-{topic}")
    inputs: list[Input] = []
    n = 0
    while len(inputs) < count:
        n += 1
        kind = "huge_value" if n % 100 == 50 else FUZZ_KINDS[n % len(FUZZ_KINDS)]
        for _ in range(100):
            value, key = _candidate(rng, topic, n, kind)
            if oracle(topic, value) is Fate.DEAD_LETTER:
                break
        else:
            raise AssertionError(f"generator bug: no bad {kind} input for {topic} in 100 tries")
        extra = (("x-binary", rng.randbytes(8)),) if n % 11 == 0 else ()
        trace = f"fz-{topic}-{len(inputs)}"
        inputs.append(
            Input(trace, topic, key, value, Fate.DEAD_LETTER, None, f"fuzz.{kind}", extra)
        )
    return inputs
