"""The destination intake when a call is already on its userId's partition (mapped in place)."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import pytest

from worker.backends.autopilot import AutopilotBackend
from worker.destination.agents import Destination
from worker.errors import Fate, SkipMessage
from worker.identity import ToldIdentities
from worker.pipeline.records import InboundMessage, OutboundRecord
from worker.pipeline.stage import FailedAfter
from worker.runtime.placement import Placement, home_partition
from worker.runtime.tables import ChangelogTable
from worker.settings import Settings
from worker.topics import TopicNames

PARTITIONS = 3
SETTINGS = Settings(autopilot_trigger_id=None, autopilot_triggers={})
topic_names = TopicNames.from_settings(SETTINGS)


def at_home(call: Mapping[str, object], key: bytes) -> InboundMessage:
    return InboundMessage(
        topic=topic_names.segment_calls,
        partition=home_partition(key, PARTITIONS),
        offset=7,
        timestamp_ms=1_700_000_000_000,
        key=key,
        value=orjson.dumps(call),
    )


@pytest.fixture
def agents() -> Destination:
    """The destination with its tables' rows in plain dicts (faust's stores exist once the app
    runs), on three partitions, with nothing told to the source yet."""
    emails: dict[bytes, str] = {}
    memberships: dict[bytes, dict[str, bool]] = {}
    return Destination(
        backends=(AutopilotBackend.from_settings(SETTINGS),),
        topics=topic_names,
        placement=Placement(lambda topic: PARTITIONS),
        email_by_user=ChangelogTable(lambda: emails, "emails-changelog"),
        audiences=ChangelogTable(lambda: memberships, "audiences-changelog"),
        told_identities=ToldIdentities(capacity=3),
    )


def test_a_call_at_home_is_mapped_and_its_identity_learned_in_one_step(agents: Destination) -> None:
    call = {"type": "identify", "userId": "u-1", "traits": {"email": "Kay@Example.com"}}
    records = agents.intake(at_home(call, b"u-1"))

    assert isinstance(records, list)
    assert [(r.topic, r.key) for r in records] == [
        (topic_names.autopilot_requests, b"kay@example.com"),
        ("emails-changelog", b"u-1"),  # the email learned for u-1, made durable with the batch
        (topic_names.source_by_email, b"kay@example.com"),  # and told to the source
    ]
    assert orjson.loads(records[0].value)["kind"] == "upsert_contact"
    assert orjson.loads(records[1].value) == "kay@example.com"
    assert agents.email_by_user.get(b"u-1") == "kay@example.com"


def test_a_call_at_home_that_is_skipped_still_teaches_its_identity(agents: Destination) -> None:
    call = {
        "type": "track",
        "event": "No Trigger For This",
        "userId": "u-2",
        "context": {"traits": {"email": "two@example.com"}},
    }
    result = agents.intake(at_home(call, b"u-2"))

    assert isinstance(result, FailedAfter)
    assert [(r.topic, r.key) for r in result.records] == [
        ("emails-changelog", b"u-2"),
        (topic_names.source_by_email, b"two@example.com"),
    ]
    assert result.error.fate is Fate.SKIP


def test_an_audience_membership_is_sent_once_and_recorded_with_the_batch(
    agents: Destination,
) -> None:
    call = {
        "type": "identify",
        "userId": "u-4",
        "traits": {"email": "four@example.com", "high_value": True},
        "context": {"personas": {"computation_class": "audience", "computation_key": "high_value"}},
    }
    first = agents.intake(at_home(call, b"u-4"))

    assert isinstance(first, list)
    assert ("audiences-changelog", b"u-4") in [(r.topic, r.key) for r in first]
    assert agents.audiences.get(b"u-4") == {"high_value": True}
    with pytest.raises(SkipMessage, match="audience_unchanged"):  # nothing new to record either
        agents.intake(at_home(call, b"u-4"))


def test_a_call_away_from_home_is_forwarded_with_its_identity(agents: Destination) -> None:
    call = {"type": "identify", "userId": "u-3", "traits": {"email": "three@example.com"}}
    message = at_home(call, b"u-3")
    away = InboundMessage(
        topic=message.topic,
        partition=(message.partition + 1) % PARTITIONS,
        offset=message.offset,
        timestamp_ms=message.timestamp_ms,
        key=message.key,
        value=message.value,
    )
    records = agents.intake(away)

    assert isinstance(records, list)
    assert [r.topic for r in records] == [
        topic_names.destination_by_user,
        topic_names.source_by_email,
    ]


def _told(result: object) -> list[bytes | None]:
    records = result.records if isinstance(result, FailedAfter) else result
    assert isinstance(records, list)
    return [r.key for r in records if r.topic == topic_names.source_by_email]


def _identify(user: str, email: str) -> InboundMessage:
    return at_home({"type": "identify", "userId": user, "traits": {"email": email}}, user.encode())


def test_the_source_is_told_a_tie_once_and_again_when_it_changes(agents: Destination) -> None:
    told = [
        _told(agents.intake(_identify(user, email)))
        for user, email in [
            ("u-5", "Five@Example.com"),
            ("u-5", "five@example.com"),  # the same tie
            ("u-6", "five@example.com"),  # the email now tied to another user
            ("u-5", "five@example.com"),  # and back
        ]
    ]

    assert told == [[b"five@example.com"], [], [b"five@example.com"], [b"five@example.com"]]


def test_a_tie_pushed_out_of_memory_is_told_again(agents: Destination) -> None:
    emails = [f"{n}@example.com" for n in range(4)]  # one more than the fixture's capacity
    for n, email in enumerate(emails):
        agents.intake(_identify(f"u-{n}", email))

    assert _told(agents.intake(_identify("u-0", emails[0]))) == [b"0@example.com"]
    assert _told(agents.intake(_identify("u-3", emails[3]))) == []


def test_a_tie_whose_call_failed_unexpectedly_is_told_again(
    agents: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken:
        """A backend whose mapping has a bug."""

        integration_names = ("AutopilotHQ",)
        source_integrations = ()
        keeps_original_names = True
        name = "autopilot"

        def requests_for(self, *args: object, **kwargs: object) -> object:
            raise RuntimeError("a bug")

    with monkeypatch.context() as patched:
        patched.setattr(agents, "backends", (Broken(),))
        with pytest.raises(RuntimeError):  # the pipeline dead-letters it: nothing is sent
            agents.intake(_identify("u-7", "seven@example.com"))

    assert _told(agents.intake(_identify("u-7", "seven@example.com"))) == [b"seven@example.com"]


def _with_source_table(held: bool) -> tuple[Destination, dict[bytes, str]]:
    """The destination with the source's table beside it (the source runs in this process),
    holding every partition of the source's topic or none."""
    rows: dict[bytes, str] = {}
    every = range(PARTITIONS)
    return Destination(
        backends=(AutopilotBackend.from_settings(SETTINGS),),
        topics=topic_names,
        placement=Placement(lambda topic: PARTITIONS, held_of=lambda t: every if held else ()),
        email_by_user=ChangelogTable(lambda: {}, "emails-changelog"),
        audiences=ChangelogTable(lambda: {}, "audiences-changelog"),
        told_identities=ToldIdentities(capacity=3),
        source_ties=ChangelogTable(lambda: rows, "source-changelog"),
    ), rows


def test_a_tie_whose_partition_is_held_here_is_written_into_the_sources_table() -> None:
    agents, rows = _with_source_table(held=True)
    records = agents.intake(_identify("u-8", "Eight@Example.com"))

    assert isinstance(records, list)
    assert [(r.topic, r.key) for r in records] == [
        (topic_names.autopilot_requests, b"eight@example.com"),
        ("emails-changelog", b"u-8"),
        ("source-changelog", b"eight@example.com"),  # no identity record to read back
    ]
    assert orjson.loads(records[2].value) == "u-8"
    assert rows == {b"eight@example.com": "u-8"}  # the source finds it from now on

    agents.told_identities = ToldIdentities(capacity=3)  # forgotten (a restart): the row says so
    again = agents.intake(_identify("u-8", "eight@example.com"))
    assert "source-changelog" not in [r.topic for r in _records(again)]
    moved = agents.intake(_identify("u-9", "eight@example.com"))  # the email now another's
    assert ("source-changelog", b"eight@example.com") in [(r.topic, r.key) for r in _records(moved)]
    assert rows == {b"eight@example.com": "u-9"}


def test_a_tie_whose_partition_is_held_elsewhere_goes_to_the_sources_topic() -> None:
    agents, rows = _with_source_table(held=False)
    records = agents.intake(_identify("u-8", "eight@example.com"))

    assert [(r.topic, r.key) for r in _records(records)][-1] == (
        topic_names.source_by_email,
        b"eight@example.com",
    )
    assert rows == {}  # the process that holds it writes the row when it reads the record


def _records(result: object) -> list[OutboundRecord]:
    records = result.records if isinstance(result, FailedAfter) else result
    assert isinstance(records, list)
    return records
