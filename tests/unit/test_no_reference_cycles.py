"""A stage's skips, dead letters and failures leave no reference cycle behind.

An error kept as a value with its traceback holds the frames it went through, and a frame that
holds the error makes a cycle: only the garbage collector frees it, with everything those frames
held (the parsed call, its requests). With a skip or a dead letter in most batches, that was
a tenth of the worker's CPU and 30 MiB of its memory (docs/FIGURES.md, "Lean state"). Each test
routes a mixed batch with the collector off and asserts it finds nothing to free afterwards.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson
import pytest

from tests.benchmarks.inputs import DESTINATION_BACKEND, source_inputs
from tests.unit.doubles import RecordingSender
from worker.backends.ortto import OrttoBackend
from worker.destination.agents import Destination
from worker.identity import ToldIdentities
from worker.pipeline.breaker import Breaker
from worker.pipeline.records import InboundMessage
from worker.pipeline.stage import Stage
from worker.runtime.placement import Placement, home_partition
from worker.runtime.tables import ChangelogTable
from worker.settings import Settings
from worker.source.agents import Source
from worker.source.mapping import email_event_contact
from worker.topics import TopicNames

PARTITIONS = 3
topics = TopicNames.from_settings(Settings())


def _stage(name: str, handler: Callable[[InboundMessage], Any]) -> Stage:
    return Stage(
        name,
        "intake",
        handler,
        RecordingSender(),
        topics.dead_letters,
        Breaker(window=100, min_messages=50, max_ratio=0.9),
    )


def _call(value: Mapping[str, object] | bytes, key: bytes) -> InboundMessage:
    return InboundMessage(
        topic=topics.segment_calls,
        partition=home_partition(key, PARTITIONS),
        offset=1,
        timestamp_ms=1_700_000_000_000,
        key=key,
        value=value if isinstance(value, bytes) else orjson.dumps(value),
    )


def _destination(*backends: Any) -> Destination:
    emails: dict[bytes, str] = {}
    memberships: dict[bytes, dict[str, bool]] = {}
    destination = Destination(
        backends=backends,
        topics=topics,
        placement=Placement(lambda topic: PARTITIONS),
        email_by_user=ChangelogTable(lambda: emails, "emails-changelog"),
        audiences=ChangelogTable(lambda: memberships, "audiences-changelog"),
        told_identities=ToldIdentities(capacity=100),
    )
    for backend in backends:
        destination.own_stages[backend.name] = _stage("destination", destination.map_for(backend))
    return destination


def _calls(n: int) -> list[InboundMessage]:
    """Every way a call ends: requests, a skip that still teaches a tie (the error returned
    beside records), a plain skip (raised), a refusal (a dead letter), bytes that are not JSON."""
    calls = []
    for i in range(n):
        user = f"u-{i}"
        email = f"user.{i}@example.com"
        calls += [
            _call({"type": "identify", "userId": user, "traits": {"email": email}}, user.encode()),
            _call(
                {
                    "type": "track",
                    "event": "No Trigger For This",
                    "userId": user,
                    "context": {"traits": {"email": f"other.{i}@example.com"}},
                },
                user.encode(),
            ),
            _call({"type": "page", "userId": user, "name": "Home"}, user.encode()),
            _call({"type": "track", "event": "Signed Up", "anonymousId": f"a-{i}"}, b"a"),
            _call(b"{not json", user.encode()),
        ]
    return calls


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def _garbage_left(stage: Stage, messages: list[InboundMessage]) -> int:
    stage.route(messages[:5])  # first skips are logged: not what is measured
    gc.collect()
    records = stage.route(messages)
    assert records  # the batch did produce
    return gc.collect()


@pytest.mark.usefixtures("collector_off")
def test_a_destination_batch_leaves_nothing_for_the_collector() -> None:
    destination = _destination(DESTINATION_BACKEND)
    assert _garbage_left(_stage("destination", destination.intake), _calls(40)) == 0


@pytest.mark.usefixtures("collector_off")
def test_one_backends_failure_beside_anothers_requests_leaves_nothing_either() -> None:
    destination = _destination(DESTINATION_BACKEND, OrttoBackend())
    assert _garbage_left(_stage("destination", destination.intake), _calls(40)) == 0


@pytest.mark.usefixtures("collector_off")
def test_a_source_batch_leaves_nothing_for_the_collector() -> None:
    users: dict[bytes, str] = {}
    source = Source(
        topics, Placement(lambda topic: PARTITIONS), ChangelogTable(lambda: users, "users")
    )
    messages = []
    for n, item in enumerate(source_inputs(400)):  # valid, test deliveries, invalid
        try:
            key = email_event_contact(item.value).lower().encode()
        except Exception:
            key = b"x"
        messages.append(
            InboundMessage(
                topics.email_events, home_partition(key, PARTITIONS), n, 1, key, item.value
            )
        )
    assert _garbage_left(_stage("source", source.intake), messages) == 0
