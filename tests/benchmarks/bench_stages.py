"""The worker's intake stages against the loops' mapping, Kafka aside: what the worker adds.

`python -m tests.benchmarks.bench_stages [N] [ROUNDS]`: N inputs of each pipeline (default
100,000) from `tests.benchmarks.inputs`, keyed as the benchmark keys them, on 8 partitions, all
at home. Timed (process CPU, per input, the median of ROUNDS rounds, default 5):

- the loops' mapping (`tests.benchmarks.loops`: `map_source_record`, `map_destination_record`),
  which the pipeline benchmark's aiokafka loop and quixstreams app run too;
- the worker's `Stage.route` over batches of 500 on its intake handlers (`Source.intake`,
  `Destination.intake`), with fresh tables (rows in a dict behind a mapping, as faust's store
  keeps them) each round: identities learned and told, changelog records, skips and dead
  letters routed, the breaker counted.

The difference is the worker's own per-input work beyond the shared mapping: identities,
tables, placement, routing. The collector runs as the worker tunes it (`tune_gc`).
"""

from __future__ import annotations

import gc
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterator

from mode.utils.collections import FastUserDict

from tests.benchmarks.inputs import DESTINATION_BACKEND, destination_inputs, source_inputs
from tests.benchmarks.loops import map_destination_record, map_source_record
from worker.__main__ import tune_gc
from worker.destination.agents import Destination
from worker.errors import WorkerError
from worker.identity import ToldIdentities
from worker.pipeline.breaker import Breaker
from worker.pipeline.records import InboundMessage
from worker.pipeline.stage import Handler, Stage
from worker.runtime.placement import Placement, home_partition
from worker.runtime.tables import ChangelogTable
from worker.settings import Settings
from worker.source.agents import Source
from worker.source.mapping import email_event_contact
from worker.topics import TopicNames

PARTITIONS = 8
BATCH = 500
TOPICS = TopicNames.from_settings(Settings(autopilot_trigger_id=None, autopilot_triggers={}))


class Store(FastUserDict):  # type: ignore[type-arg]
    """Rows in a plain dict behind a mapping, as faust's in-memory store keeps them."""

    def __init__(self) -> None:
        self.data: dict[bytes, object] = {}


def _stage(name: str, handler: Handler, forward: str) -> Stage:
    breaker = Breaker(window=1000, min_messages=100, max_ratio=0.5)
    return Stage(name, "intake", handler, None, "dead-letters", breaker, forward_topic=forward)  # type: ignore[arg-type]


def _stages() -> tuple[Stage, Stage]:
    emails, audiences, users = Store(), Store(), Store()
    destination = Destination(
        backends=(DESTINATION_BACKEND,),
        topics=TOPICS,
        placement=Placement(lambda topic: PARTITIONS),
        email_by_user=ChangelogTable(lambda: emails, "emails-changelog"),
        audiences=ChangelogTable(lambda: audiences, "audiences-changelog"),
        told_identities=ToldIdentities(capacity=100_000),
    )
    source = Source(
        TOPICS,
        Placement(lambda topic: PARTITIONS),
        ChangelogTable(lambda: users, "users-changelog"),
    )
    return (
        _stage("destination", destination.intake, TOPICS.destination_by_user),
        _stage("source", source.intake, TOPICS.source_by_email),
    )


def _email_key(value: bytes) -> bytes:
    try:
        return email_event_contact(value).lower().encode()
    except WorkerError:
        return b"?"


def _batches(messages: list[InboundMessage]) -> Iterator[list[InboundMessage]]:
    for first in range(0, len(messages), BATCH):
        yield messages[first : first + BATCH]


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 100_000
    rounds = int(argv[1]) if len(argv) > 1 else 5
    logging.disable(logging.CRITICAL)  # dead letters are logged (rate-limited): not timed here
    calls, events = list(destination_inputs(n)), list(source_inputs(n))
    call_messages = [
        InboundMessage(
            TOPICS.segment_calls, home_partition(c.key or b"", PARTITIONS), i, 1, c.key, c.value
        )
        for i, c in enumerate(calls)
    ]
    event_messages = []
    for i, e in enumerate(events):
        key = _email_key(e.value)
        event_messages.append(
            InboundMessage(TOPICS.email_events, home_partition(key, PARTITIONS), i, 1, key, e.value)
        )

    def loop_destination() -> None:
        for c in calls:
            map_destination_record(c.key, c.value)

    def loop_source() -> None:
        for e in events:
            map_source_record(e.key, e.value)

    def worker_destination() -> None:
        stage = _stages()[0]
        for batch in _batches(call_messages):
            stage.route(batch)

    def worker_source() -> None:
        stage = _stages()[1]
        for batch in _batches(event_messages):
            stage.route(batch)

    tune_gc()
    steps: dict[str, Callable[[], None]] = {
        "loops' mapping, Segment calls": loop_destination,
        "worker's intake, Segment calls": worker_destination,
        "loops' mapping, email events": loop_source,
        "worker's intake, email events": worker_source,
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            started = time.process_time()
            step()
            times[name].append((time.process_time() - started) / n * 1e6)
    print(f"CPU µs per input, median of {rounds} rounds of {n:,} inputs each:")
    for name, values in times.items():
        each = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:32s} {statistics.median(values):6.2f}  ({each})")
    median = {name: statistics.median(values) for name, values in times.items()}
    calls_extra = median["worker's intake, Segment calls"] - median["loops' mapping, Segment calls"]
    events_extra = median["worker's intake, email events"] - median["loops' mapping, email events"]
    print(
        f"the worker's own: {calls_extra:.2f} µs a call, {events_extra:.2f} µs an event, "
        f"{(calls_extra + events_extra) / 2:.2f} µs an input of the pipeline benchmark's mix"
    )
    gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
