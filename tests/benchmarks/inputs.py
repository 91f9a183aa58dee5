"""Realistic mixed inputs for the benchmarks, the same for every contender in a run.

Each generator is deterministic (seeded) and tags every input with what it must become, so a
pipeline benchmark knows how many records to wait for without running the mapping twice:

- `OUTPUT`: one record on the output topic (a track, or one request descriptor);
- `SKIP`: nothing (a test delivery, a call type or event the destination does not send);
- `ERROR`: one dead letter.

The mix is what a production stream looks like: mostly valid events of every type with the
optional fields filled in as real producers fill them, and a few percent of skips and errors.
Nothing depends on learned state (no call needs an email learned earlier, no Engage audience
repeats for a contact), so the tags hold for the worker, whose tables remember, as for the
stateless baselines. `check_tags` proves the tags against the mapping functions themselves.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson

from worker.backends.autopilot import AutopilotBackend, AutopilotConfig
from worker.destination.mapping import map_destination
from worker.errors import SkipMessage, WorkerError
from worker.source.mapping import map_source
from worker.source.ortto import OrttoConfig, map_ortto

__all__ = [
    "DESTINATION_BACKEND",
    "DESTINATION_CONFIG",
    "ORTTO_CONFIG",
    "TRIGGERS",
    "Expect",
    "Input",
    "check_tags",
    "destination_inputs",
    "expected_outputs",
    "ortto_inputs",
    "source_inputs",
]

#: Segment event name -> Autopilot trigger id; other track events are skipped (no default).
TRIGGERS: dict[str, str] = {
    "Order Completed": "0001",
    "Signed Up": "0002",
    "Trial Started": "0003",
    "Plan Upgraded": "0004",
}
DESTINATION_CONFIG = AutopilotConfig(trigger_id=None, triggers=TRIGGERS)
DESTINATION_BACKEND = AutopilotBackend(DESTINATION_CONFIG)


class Expect(StrEnum):
    OUTPUT = "output"
    SKIP = "skip"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Input:
    key: bytes | None
    value: bytes
    expect: Expect


_BASE = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
_USER_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/15E148",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17029; Pro)",
)
_JOURNEYS = (
    ("campaign_CBD5C1FA", "Onboarding Journey"),
    ("campaign_0A11E4B2", "Trial Nurture"),
    ("campaign_77F0C3D9", "Win-back"),
    ("campaign_5E2B81AA", "Monthly Newsletter"),
)
_EMAILS = (
    ("Welcome to Acme", "First Onboarding Email"),
    ("Your trial ends in 3 days", "Trial Reminder"),
    ("We miss you", "Win-back 1"),
    ("What's new in November", "Newsletter November"),
)
#: (type as the producer spells it, weight): mostly canonical, some display names and aliases.
_SOURCE_TYPES: tuple[tuple[str, int], ...] = (
    ("email_delivered", 33),
    ("email_opened", 27),
    ("email_clicked", 12),
    ("Email Opened", 4),
    ("Email Link Clicked", 2),
    ("email_bounced", 3),
    ("email_unsubscribed", 2),
    ("Unsubscribed", 1),
    ("email_marked_as_spam", 1),
    ("email_replied", 2),
)


_FIRST_NAMES = ("thomas", "ann", "Lee", "maria", "chen", "olu", "priya")
_DOMAINS = ("example.com", "acme.io", "Mail.Example.org", "tankengine.com")
EMAIL_CHANGE_RATE = 0.02
"""How often a contact's call or event carries its other address: people mostly keep theirs,
so most calls confirm an identity the worker has learned and a few change it."""


def _email(rng: random.Random, contact: int) -> str:
    """Contact `contact`'s address (mixed case at times: the worker keys by it lowercased)."""
    first = _FIRST_NAMES[contact % len(_FIRST_NAMES)]
    domain = _DOMAINS[(contact // len(_FIRST_NAMES)) % len(_DOMAINS)]
    if rng.random() < EMAIL_CHANGE_RATE:
        return f"{first}.{contact}@work.{domain}"
    return f"{first}.{contact}@{domain}"


def _source_event(rng: random.Random, n: int, kind: str) -> dict[str, Any]:
    occurred = _BASE + timedelta(seconds=n, milliseconds=rng.randrange(1000))
    contact: dict[str, Any] = {"contact_id": f"person_{n:08X}", "email": _email(rng, n % 50_000)}
    if rng.random() < 0.4:
        contact["user_id"] = f"u-{n % 50_000}"
    journey_id, journey_name = rng.choice(_JOURNEYS)
    subject, name = rng.choice(_EMAILS)
    event: dict[str, Any] = {
        "id": f"evt_01HF{n:012d}",
        "type": kind,
        "occurred_at": occurred.isoformat().replace("+00:00", "Z"),
        "contact": contact,
        "journey": {"id": journey_id, "name": journey_name},
        "email": {
            "id": f"batchcampaign_{1477963234959 + n % 97}-639D",
            "subject": subject,
            "name": name,
            "transactional": rng.random() < 0.1,
        },
    }
    if rng.random() < 0.1:
        del event["journey"]
    canonical = kind.casefold()
    if "click" in canonical:
        event["link"] = {"id": f"link_{n % 13}", "url": f"https://acme.io/pricing?utm={n % 7}"}
    if "open" in canonical or "click" in canonical or "spam" in canonical:
        event["ip"] = f"203.0.{n % 256}.{(n // 256) % 256}"
        event["user_agent"] = rng.choice(_USER_AGENTS)
    return event


def bad_source(rng: random.Random, n: int) -> bytes:
    """An email event the source dead-letters: one of four kinds, picked by `rng`."""
    choice = rng.randrange(4)
    if choice == 0:  # truncated JSON
        return orjson.dumps(_source_event(rng, n, "email_opened"))[:-7]
    event = _source_event(rng, n, "email_opened")
    if choice == 1:
        del event["contact"]["email"]
    elif choice == 2:
        event["type"] = "email_forwarded"
    else:
        event["occurred_at"] = "2026-11-20 10:15"
    return orjson.dumps(event)


def source_inputs(count: int, *, seed: int = 3) -> Iterator[Input]:
    """Raw Autopilot email events: 98% valid, 1% test deliveries (skip), 1% invalid (error)."""
    rng = random.Random(seed)
    kinds = [kind for kind, _ in _SOURCE_TYPES]
    weights = [weight for _, weight in _SOURCE_TYPES]
    for n in range(count):
        roll = rng.random()
        if roll < 0.01:
            yield Input(None, bad_source(rng, n), Expect.ERROR)
            continue
        event = _source_event(rng, n, rng.choices(kinds, weights)[0])
        expect = Expect.OUTPUT
        if roll < 0.02:
            event["test"] = True
            expect = Expect.SKIP
        yield Input(event["contact"]["email"].lower().encode(), orjson.dumps(event), expect)


#: Ortto activity field id -> weight: Ortto's email activities, and the few others a webhook on
#: a journey's activities also fires for (tags, a form), skipped.
_ORTTO_ACTIVITIES: tuple[tuple[str, int], ...] = (
    ("act::s", 15),
    ("act::r", 33),
    ("act::o", 27),
    ("act::c", 12),
    ("act::b", 3),
    ("act::u-all", 2),
    ("act::t", 2),
    ("act:cm:form-submitted", 1),
)
#: The attr keys of the benchmark's Ortto activities are made up (Ortto publishes none): what
#: counts is that a few of them fill properties, as ORTTO_ATTRIBUTE_PROPERTIES would say.
ORTTO_CONFIG = OrttoConfig.build(
    attribute_properties={
        "str:cm:campaign-id": "campaign_id",
        "str:cm:campaign": "campaign_name",
        "str:cm:subject": "email_subject",
        "str:cm:url": "link_url",
    }
)
_CITIES = (("Kolkata", "India", 1269750), ("Sydney", "Australia", 2077456), ("Lyon", "France", 0))


def _ortto_activity(rng: random.Random, n: int, field_id: str) -> dict[str, Any]:
    """An activity as Ortto's Webhook (advanced) sends it: the contact's locked fields with it."""
    created = _BASE + timedelta(seconds=n, milliseconds=rng.randrange(1000))
    sent = created + timedelta(microseconds=rng.randrange(900_000))
    journey_id, journey_name = rng.choice(_JOURNEYS)
    subject, _ = rng.choice(_EMAILS)
    attr: dict[str, Any] = {
        "str::is": "Journey",
        "str:cm:campaign-id": journey_id,
        "str:cm:campaign": journey_name,
        "str:cm:subject": subject,
    }
    if field_id == "act::c":
        attr["str:cm:url"] = f"https://acme.io/pricing?utm={n % 7}"
    city, country, country_id = rng.choice(_CITIES)
    contact: dict[str, Any] = {
        "contact_id": f"00651b946baa9be6{n:08x}",
        "email": _email(rng, n % 50_000),
        "first_name": _FIRST_NAMES[n % len(_FIRST_NAMES)].title(),
        "last_name": "Tank",
        "postal": f"{700001 + n % 90}",
        "city": {"name": city, "id": 0, "lat": 37751000, "lng": -97822000},
        "country": {"name": country, "id": country_id},
        "birthday": {"year": 1980, "month": 12, "day": 11, "timezone": "Australia/Sydney"},
        "phone_number": {"c": "91", "n": f"40{n % 10_000_000:07d}"},
    }
    if rng.random() < 0.4:
        contact["external_id"] = f"u-{n % 50_000}"
    return {
        "id": f"00651b946cef{n:012x}",
        "time": sent.replace(tzinfo=None).isoformat(timespec="microseconds")
        + f"{rng.randrange(1000):03d}Z",
        "webhook_id": "651b8aec8002153e16319fd3",
        "activity": {
            "id": f"00651b946bfe{n:012x}",
            "field_id": field_id,
            "created": created.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            "attr": attr,
        },
        "contact": contact,
    }


def ortto_inputs(count: int, *, seed: int = 5) -> Iterator[Input]:
    """Ortto activity webhooks: 97% email activities, 3% other activities (skips), 0.5% test
    deliveries (skips) and 1% invalid (errors), keyed by lowercased email as the route keys them."""
    rng = random.Random(seed)
    kinds = [kind for kind, _ in _ORTTO_ACTIVITIES]
    weights = [weight for _, weight in _ORTTO_ACTIVITIES]
    for n in range(count):
        roll = rng.random()
        kind = rng.choices(kinds, weights)[0]
        activity = _ortto_activity(rng, n, kind)
        expect = Expect.OUTPUT if kind in ORTTO_CONFIG.events else Expect.SKIP
        if roll < 0.005:
            activity["activity"]["field_id"] = "act::test_webhook"
            expect = Expect.SKIP
        elif roll < 0.015:
            choice = rng.randrange(3)
            activity["activity"]["field_id"] = "act::o"
            if choice == 0:
                del activity["contact"]["email"]
            elif choice == 1:
                activity["activity"]["created"] = "2026-11-20 10:15"
            else:
                del activity["id"]
            yield Input(None, orjson.dumps(activity), Expect.ERROR)
            continue
        key = activity["contact"]["email"].lower().encode()
        yield Input(key, orjson.dumps(activity), expect)


def _context(rng: random.Random, n: int) -> dict[str, Any]:
    return {
        "library": {"name": "analytics.js", "version": "next-1.64.0"},
        "ip": f"198.51.{n % 256}.{(n // 256) % 256}",
        "locale": rng.choice(("en-US", "fr-FR", "de-DE")),
        "userAgent": rng.choice(_USER_AGENTS),
        "page": {
            "path": "/pricing",
            "referrer": "https://www.google.com/",
            "title": "Pricing - Acme",
            "url": "https://acme.io/pricing",
        },
        "timezone": "Europe/Paris",
    }


def _envelope(rng: random.Random, n: int, kind: str, user: str | None) -> dict[str, Any]:
    sent = _BASE + timedelta(seconds=n)
    call: dict[str, Any] = {
        "type": kind,
        "anonymousId": f"anon-{n % 80_000:06d}-4c1b-9f7e",
        "messageId": f"ajs-next-{n:012d}-{rng.getrandbits(32):08x}",
        "context": _context(rng, n),
        "integrations": {},
        "originalTimestamp": sent.isoformat(),
        "timestamp": sent.isoformat(),
        "sentAt": sent.isoformat(),
        "receivedAt": sent.isoformat(),
        "writeKey": "wk-bench",
        "version": 2,
    }
    if user is not None:
        call["userId"] = user
    return call


def _identify(rng: random.Random, n: int) -> dict[str, Any]:
    user = f"u-{n % 50_000}"
    call = _envelope(rng, n, "identify", user)
    traits: dict[str, Any] = {
        "email": _email(rng, n % 50_000),
        "firstName": rng.choice(("Ann", "Thomas", "Maria", "Chen")),
        "lastName": rng.choice(("Lee", "Tank", "Garcia", "Wu")),
        "plan": rng.choice(("free", "pro", "enterprise")),
        "logins": rng.randrange(500),
        "premium": rng.random() < 0.3,
        "score": round(rng.random() * 10, 2),
        "createdAt": "2025-03-14T09:26:53.589Z",
    }
    if rng.random() < 0.5:
        traits["phone"] = "+33 1 23 45 67 89"
        traits["title"] = "CTO"
        traits["company"] = {"name": "Acme", "industry": "Software", "employee_count": 120}
    if rng.random() < 0.3:
        traits["address"] = {"street": "1 Main St", "city": "Paris", "postalCode": "75001"}
    call["traits"] = traits
    return call


_TRACK_EVENTS = (
    ("Order Completed", 20),
    ("Signed Up", 10),
    ("Trial Started", 8),
    ("Plan Upgraded", 7),
    ("Product Viewed", 15),  # no trigger: skipped
    ("Button Clicked", 10),  # no trigger: skipped
)


def _track(rng: random.Random, n: int, event: str) -> dict[str, Any]:
    call = _envelope(rng, n, "track", f"u-{n % 50_000}")
    call["event"] = event
    call["properties"] = {
        "email": _email(rng, n % 50_000),
        "order_id": f"o-{n}",
        "revenue": round(rng.random() * 300, 2),
        "currency": "EUR",
        "products": [{"sku": f"sku-{n % 40}", "price": 19.99, "quantity": 1 + n % 3}],
    }
    return call


def destination_inputs(count: int, *, seed: int = 4) -> Iterator[Input]:
    """Segment calls: identify 30%, track 58% (35% of them have no trigger), page/screen/group/
    alias 7%, Engage audiences 2%, AutopilotHQ turned off 1% (skips), invalid 2% (errors)."""
    rng = random.Random(seed)
    events = [event for event, _ in _TRACK_EVENTS]
    weights = [weight for _, weight in _TRACK_EVENTS]
    for n in range(count):
        roll = rng.random()
        expect = Expect.OUTPUT
        if roll < 0.30:
            call = _identify(rng, n)
        elif roll < 0.88:
            event = rng.choices(events, weights)[0]
            call = _track(rng, n, event)
            if event not in TRIGGERS:
                expect = Expect.SKIP
        elif roll < 0.95:
            kind = rng.choice(("page", "page", "page", "screen", "group", "alias"))
            call = _envelope(rng, n, kind, f"u-{n % 50_000}")
            call["properties"] = {"path": "/pricing", "title": "Pricing"}
            expect = Expect.SKIP
        elif roll < 0.96:  # Engage audience identify: a key no contact repeats
            call = _envelope(rng, n, "identify", f"aud-{n}")
            call["traits"] = {"email": f"aud.{n}@example.com", f"audience_{n % 5}": True}
            call["context"]["personas"] = {
                "computation_class": "audience",
                "computation_key": f"audience_{n % 5}",
                "computation_id": "aud_2Jx",
            }
        elif roll < 0.97:  # Engage audience track
            call = _envelope(rng, n, "track", f"aud-{n}")
            call["event"] = rng.choice(("Audience Entered", "Audience Exited"))
            call["properties"] = {"audience_key": "high_value", "email": f"aud.{n}@example.com"}
        elif roll < 0.98:  # the Autopilot Source's own tracks coming back: not sent
            call = _track(rng, n, "Order Completed")
            call["integrations"] = {"AutopilotHQ": False}
            expect = Expect.SKIP
        else:
            yield Input(None, bad_destination(rng, n), Expect.ERROR)
            continue
        user = call.get("userId") or call["anonymousId"]
        yield Input(str(user).encode(), orjson.dumps(call), expect)


def bad_destination(rng: random.Random, n: int) -> bytes:
    """A Segment call the destination dead-letters: one of four kinds, picked by `rng`."""
    choice = rng.randrange(4)
    if choice == 0:
        return orjson.dumps(_track(rng, n, "Order Completed"))[:-3]
    if choice == 1:  # identify with neither email nor userId
        call = _envelope(rng, n, "identify", None)
        call["traits"] = {"firstName": "Ann"}
        return orjson.dumps(call)
    if choice == 2:  # track with no email anywhere and no userId to learn one from
        call = _track(rng, n, "Signed Up")
        del call["userId"], call["properties"]["email"]
        return orjson.dumps(call)
    call = _envelope(rng, n, "track", f"u-{n}")  # a track without event
    return orjson.dumps(call)


def expected_outputs(inputs: Sequence[Input]) -> Counter[Expect]:
    return Counter(item.expect for item in inputs)


def check_tags(
    source: Sequence[Input], destination: Sequence[Input], ortto: Sequence[Input] = ()
) -> None:
    """Raise if a tag disagrees with what the mapping functions do with the input.

    Not a speed assertion: a wrong tag would make a pipeline benchmark wait for records that
    never come (or stop early), so the inputs are checked before anything is timed.
    """
    now = datetime.now(UTC)
    for item in ortto:
        try:
            map_ortto(item.value, config=ORTTO_CONFIG, received_at=now)
            got = Expect.OUTPUT
        except SkipMessage:
            got = Expect.SKIP
        except WorkerError:
            got = Expect.ERROR
        if got is not item.expect:
            raise RuntimeError(f"ortto input tagged {item.expect} became {got}: {item.value!r}")
    for item in source:
        try:
            map_source(item.value, received_at=now)
            got = Expect.OUTPUT
        except SkipMessage:
            got = Expect.SKIP
        except WorkerError:
            got = Expect.ERROR
        if got is not item.expect:
            raise RuntimeError(f"source input tagged {item.expect} became {got}: {item.value!r}")
    for item in destination:
        try:
            requests = map_destination(item.value, backend=DESTINATION_BACKEND).requests
            got = Expect.OUTPUT if len(requests) == 1 else Expect.ERROR
        except SkipMessage:
            got = Expect.SKIP
        except WorkerError:
            got = Expect.ERROR
        if got is not item.expect:
            raise RuntimeError(
                f"destination input tagged {item.expect} became {got}: {item.value!r}"
            )
