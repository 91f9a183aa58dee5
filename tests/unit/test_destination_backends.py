"""The destination with two backends (a migration from Autopilot to Ortto): each call mapped for
both, each backend's requests on its own topic, its audience memberships under its own keys, and
one backend's failure beside the other's requests routed by a stage of its own."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import pytest

from tests.unit.doubles import RecordingSender
from worker.backends.autopilot import AutopilotBackend, AutopilotConfig
from worker.backends.ortto import OrttoBackend
from worker.destination.agents import Destination
from worker.errors import Fate, SkipMessage, ValidationError
from worker.identity import ToldIdentities
from worker.pipeline.breaker import Breaker
from worker.pipeline.dead_letters import DeadLetterHeaders as H
from worker.pipeline.records import InboundMessage, header
from worker.pipeline.stage import Stage
from worker.runtime.placement import Placement, home_partition
from worker.runtime.tables import ChangelogTable
from worker.settings import Settings
from worker.topics import TopicNames

PARTITIONS = 3
topics = TopicNames.from_settings(Settings())
AUTOPILOT = AutopilotBackend(AutopilotConfig(trigger_id="0001"))
ORTTO = OrttoBackend()


def at_home(call: Mapping[str, object], key: bytes) -> InboundMessage:
    return InboundMessage(
        topic=topics.segment_calls,
        partition=home_partition(key, PARTITIONS),
        offset=7,
        timestamp_ms=1_700_000_000_000,
        key=key,
        value=orjson.dumps(call),
    )


@pytest.fixture
def both() -> Destination:
    emails: dict[bytes, str] = {}
    memberships: dict[bytes, dict[str, bool]] = {}
    breaker = Breaker(window=10, min_messages=5, max_ratio=0.9)
    destination = Destination(
        backends=(AUTOPILOT, ORTTO),
        topics=topics,
        placement=Placement(lambda topic: PARTITIONS),
        email_by_user=ChangelogTable(lambda: emails, "emails-changelog"),
        audiences=ChangelogTable(lambda: memberships, "audiences-changelog"),
        told_identities=ToldIdentities(capacity=10),
    )
    for backend in (AUTOPILOT, ORTTO):
        destination.own_stages[backend.name] = Stage(
            "destination",
            f"map-{backend.name}",
            destination.map_for(backend),
            RecordingSender(),
            topics.dead_letters,
            breaker,
        )
    return destination


def test_a_call_is_mapped_for_both_each_on_its_own_topic(both: Destination) -> None:
    call = {"type": "identify", "userId": "u-1", "traits": {"email": "Kay@Example.com"}}
    records = both.intake(at_home(call, b"u-1"))

    assert isinstance(records, list)
    assert [(r.topic, r.key) for r in records] == [
        (topics.autopilot_requests, b"kay@example.com"),
        (topics.ortto_requests, b"u-1"),
        ("emails-changelog", b"u-1"),
        (topics.source_by_email, b"kay@example.com"),
    ]
    assert orjson.loads(records[0].value)["kind"] == "upsert_contact"
    assert orjson.loads(records[1].value)["kind"] == "merge_person"


def test_each_backend_records_its_own_audience_memberships(both: Destination) -> None:
    call = {
        "type": "identify",
        "userId": "u-2",
        "traits": {"email": "two@example.com", "vip": True},
        "context": {"personas": {"computation_class": "audience", "computation_key": "vip"}},
    }
    first = both.intake(at_home(call, b"u-2"))
    assert isinstance(first, list)
    assert both.audiences.get(b"u-2") == {"vip": True, "ortto:vip": True}
    with pytest.raises(SkipMessage, match="audience_unchanged"):
        both.intake(at_home(call, b"u-2"))

    # a row Autopilot alone wrote (before Ortto was added): Ortto sends its first membership
    both.audiences.set(b"u-2", {"vip": True})
    records = both.intake(at_home(call, b"u-2"))
    assert isinstance(records, list)
    assert [r.topic for r in records if r.topic.endswith(".requests")] == [topics.ortto_requests]
    assert both.audiences.get(b"u-2") == {"vip": True, "ortto:vip": True}


def test_a_failure_beside_the_others_requests_is_the_failing_backends_own_dead_letter(
    both: Destination,
) -> None:
    # no email anywhere: Autopilot needs one for a track, Ortto finds the person by userId
    call = {"type": "track", "event": "Signed Up", "userId": "u-3", "messageId": "m-3"}
    message = at_home(call, b"u-3")
    records = both.intake(message)

    assert isinstance(records, list)
    (request, letter) = records
    assert request.topic == topics.ortto_requests
    assert letter.topic == topics.dead_letters
    assert letter.value == message.value
    assert header(letter.headers, H.STAGE) == b"map-autopilot"
    assert header(letter.headers, H.MESSAGE) == b"Email is required for track calls"
    assert both.own_stages["autopilot"].stats.dead_lettered == {"ValidationError": 1}

    # replayed through that stage, the call is mapped for Autopilot alone: it fails again
    # there, and Ortto's request is not made a second time
    with pytest.raises(ValidationError, match=r"^Email is required for track calls$"):
        both.own_stages["autopilot"].handler(message)
    learned = {"type": "identify", "userId": "u-3", "traits": {"email": "three@example.com"}}
    both.intake(at_home(learned, b"u-3"))  # now the email of u-3 is known
    replayed = both.own_stages["autopilot"].handler(message)
    assert isinstance(replayed, list)
    assert [r.topic for r in replayed] == [topics.autopilot_requests]


def test_a_skip_beside_the_others_requests_is_counted_on_the_skipping_backends_stage(
    both: Destination,
) -> None:
    call = {
        "type": "identify",
        "userId": "u-4",
        "traits": {"email": "four@example.com"},
        "integrations": {"Ortto": False},
    }
    records = both.intake(at_home(call, b"u-4"))

    assert isinstance(records, list)
    assert [r.topic for r in records if r.topic.endswith(".requests")] == [
        topics.autopilot_requests
    ]
    assert both.own_stages["ortto"].stats.skipped == {"integration_disabled": 1}


def test_when_no_backend_has_a_request_the_call_fails_once(both: Destination) -> None:
    same = {"type": "identify", "anonymousId": "a-5", "traits": {"firstName": "Nobody"}}
    with pytest.raises(ValidationError) as error:
        both.intake(at_home(same, b"a-5"))
    assert error.value.message.startswith("Missing unique identifier traits")

    page = {"type": "page", "userId": "u-6", "name": "Home"}
    with pytest.raises(SkipMessage, match=r"^unsupported_call_page$"):
        both.intake(at_home(page, b"u-6"))

    source_track = {
        "type": "track",
        "event": "Email Opened",
        "anonymousId": "src@example.com",
        "integrations": {"AutopilotHQ": False},
        "context": {"integration": {"name": "AutopilotHQ", "version": "1"}},
    }
    with pytest.raises(SkipMessage) as skipped:
        both.intake(at_home(source_track, b"src@example.com"))
    assert skipped.value.reason == ("autopilot:integration_disabled,ortto:from_source_integration")


def test_refusals_that_differ_are_named_by_api(both: Destination) -> None:
    call = {"type": "track", "event": "Signed Up", "anonymousId": "a-7"}
    with pytest.raises(ValidationError) as raised:
        both.intake(at_home(call, b"a-7"))
    assert raised.value.fate is Fate.DEAD_LETTER
    assert raised.value.message == (
        "Autopilot: Email is required for track calls; "
        "Ortto: Email or userId is required for track calls"
    )
    assert str(raised.value) == raised.value.message
