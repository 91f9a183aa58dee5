"""Replays from the console, and what became of each.

`replay_letters` replays as `python -m worker dlq replay PARTITION@OFFSET ...` does: it reads
the selected letters from the dead-letter topic (`read_refs`), plans them with the same
`plan_replay` (a letter at `DEFAULT_MAX_REPLAYS` is skipped, the loop stopper) and produces
the plan's records onto the worker-private retry topic, with the worker's own producer, each
acknowledged before the answer.

The console then follows each replay it made (`ReplayLog`, the latest `KEPT_REPLAYS`), from
what the topics say, so it works whichever replica runs the replay:

- **failed again**: a later dead letter of the same input message carries the replay's count
  (read by the `FailureFeed`), or, for a delivery, its outcome on its backend's deliveries
  topic is `dead_lettered`;
- **delivered**: the backend's deliveries topic (autopilot.deliveries for `delivery`,
  ortto.deliveries for `delivery-ortto`) has the replayed messageId delivered
  (`DeliveriesWatch`, a consumer of that topic that runs only while a replayed delivery to that
  backend waits for its outcome, from the end offsets taken before the replay was produced);
- **done**, for any other stage: the worker's consumer group committed the retry topic past the
  replay, and the dead-letter topic, read up to its end offsets taken after that, has no new
  letter for it (a stage's dead letters are acknowledged before its input is committed);
  a replayed delivery is then **back in delivery**, waiting for its outcome. A stage that
  forwards its input to a later stage of its pipeline (an intake to its map stage) is done
  once it ran; should the later stage fail it, the replay still turns into failed again;
- **waiting** until one of those is known.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from worker.console.failures import FailureFeed, FailureRing, identify
from worker.pipeline.letters import LetterRef, Origin
from worker.pipeline.records import OutboundRecord
from worker.pipeline.replay import ReplayTarget
from worker.pipeline.replay_plan import DEFAULT_MAX_REPLAYS, plan_replay
from worker.runtime.dead_letter_topic import partitions_of, read_refs
from worker.runtime.kafka_connection import kafka_client_config
from worker.settings import Settings
from worker.topics import TopicNames

__all__ = [
    "KEPT_REPLAYS",
    "DeliveriesWatch",
    "Replay",
    "ReplayLog",
    "ReplayState",
    "ReplayWatcher",
    "delivery_backend",
    "replay_letters",
]

log = logging.getLogger(__name__)

#: The replays the console follows and lists (the latest).
KEPT_REPLAYS = 200
#: A replay the console may take at once.
MAX_REFS = 100
#: The pipeline whose replays end in a delivery outcome (Autopilot's; another backend's is
#: `delivery-<name>`, `worker.backends.seam.qualified`).
DELIVERY_PIPELINE = "delivery"
_CHECK_EVERY_S = 1.0

#: Produces records, returning (partition, offset) of each once acknowledged.
SendEach = Callable[[Sequence[OutboundRecord]], Awaitable[list[tuple[int, int]]]]


class ReplayState(StrEnum):
    WAITING = "waiting"
    IN_DELIVERY = "back in delivery"
    DONE = "done"
    DELIVERED = "delivered"
    FAILED_AGAIN = "failed again"

    @property
    def final(self) -> bool:
        return self in (ReplayState.DONE, ReplayState.DELIVERED, ReplayState.FAILED_AGAIN)


@dataclass
class Replay:
    """One letter the console replayed, and what became of it."""

    ref: LetterRef
    target: ReplayTarget
    number: int
    at: float
    retry: tuple[int, int]
    origin: Origin | None
    message_id: str | None
    contact: str | None
    state: ReplayState = ReplayState.WAITING
    detail: str = ""
    #: the dead letter it failed again as, when the ring holds it
    again: LetterRef | None = None
    #: the dead-letter topic's end offsets taken once the retry stage committed past it
    dead_letter_ends: dict[int, int] | None = field(default=None, repr=False)

    @property
    def delivery(self) -> bool:
        return delivery_backend(self.target.pipeline) is not None

    @property
    def backend(self) -> str | None:
        """The backend a replayed delivery goes to (None: not a delivery)."""
        return delivery_backend(self.target.pipeline)


def delivery_backend(pipeline: str) -> str | None:
    """The backend whose delivery `pipeline` is (`delivery`: autopilot, `delivery-<name>`:
    name), None for any other pipeline."""
    if pipeline == DELIVERY_PIPELINE:
        return "autopilot"
    if pipeline.startswith(DELIVERY_PIPELINE + "-"):
        return pipeline.removeprefix(DELIVERY_PIPELINE + "-")
    return None


class ReplayLog:
    """The console's latest replays, newest last."""

    def __init__(self, size: int = KEPT_REPLAYS) -> None:
        self._replays: deque[Replay] = deque(maxlen=size)

    def add(self, replay: Replay) -> None:
        self._replays.append(replay)

    def latest(self) -> list[Replay]:
        return list(reversed(self._replays))

    def pending(self) -> list[Replay]:
        return [r for r in self._replays if not r.state.final]

    def of(self, ref: LetterRef) -> Replay | None:
        """The latest replay of the letter at `ref`."""
        return next((r for r in reversed(self._replays) if r.ref == ref), None)

    def note_failures(self, ring: FailureRing) -> None:
        """Mark each replay whose input message failed again at its count or later: one still
        waiting, and one done or back in delivery too (a stage that forwards its input to a
        later stage of its pipeline is done before that stage ran)."""
        open_ = [
            (replay, origin)
            for replay in self._replays
            if (origin := replay.origin) is not None
            and replay.state not in (ReplayState.FAILED_AGAIN, ReplayState.DELIVERED)
        ]
        if not open_:
            return  # nothing to look up: the ring's letters stay unparsed
        later = ring.later_failures({origin for _, origin in open_})
        for replay, origin in open_:
            failure = later.get(origin)
            if failure is None or failure.ref == replay.ref or failure.replay_count < replay.number:
                continue
            replay.state = ReplayState.FAILED_AGAIN
            replay.again = failure.ref
            replay.detail = f"{failure.error_class} {failure.status}: {failure.message}"[:300]

    def note_outcome(self, outcome: dict[str, Any], written_ms: int) -> None:
        """A delivery outcome (a deliveries topic's value) for a pending replayed delivery to
        the backend it names (results written before there were two name none: Autopilot)."""
        message_id = outcome.get("message_id")
        backend = outcome.get("backend") or "autopilot"
        for replay in self.pending():
            if replay.backend != backend or replay.message_id != message_id:
                continue
            if written_ms < replay.at * 1000 - 2000:
                continue
            if outcome.get("outcome") == "delivered":
                replay.state = ReplayState.DELIVERED
                replay.detail = (
                    f"status {outcome.get('status')} after {outcome.get('attempts')} attempt(s)"
                )
            else:
                replay.state = ReplayState.FAILED_AGAIN
                replay.detail = (
                    f"{outcome.get('error_class')} {outcome.get('status')}: "
                    f"{outcome.get('error') or ''}"
                )[:300]


class DeliveriesWatch:
    """Reads delivery outcomes while replayed deliveries wait for theirs (`arm` ... `close`)."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self._settings = settings
        self._topic = topic
        self._consumer: AIOKafkaConsumer | None = None

    @property
    def armed(self) -> bool:
        return self._consumer is not None

    async def arm(self) -> None:
        """Read from the topic's end offsets now on (call before producing the replays)."""
        if self._consumer is not None:
            return
        tps = await partitions_of(self._settings, self._topic)
        consumer = AIOKafkaConsumer(
            **kafka_client_config(self._settings),
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{self._settings.worker_app_id}-console",
        )
        await consumer.start()
        try:
            consumer.assign(tps)
            for tp, end in (await consumer.end_offsets(tps)).items():
                consumer.seek(tp, end)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer

    async def poll(self) -> list[tuple[dict[str, Any], int]]:
        """The outcomes written since the last poll, with when each was written (ms)."""
        if self._consumer is None:
            return []
        batches = await self._consumer.getmany(timeout_ms=200, max_records=1000)
        outcomes = []
        for records in batches.values():
            for record in records:
                try:
                    value = orjson.loads(record.value or b"")
                except orjson.JSONDecodeError:
                    continue
                if isinstance(value, dict):
                    outcomes.append((value, int(record.timestamp or 0)))
        return outcomes

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


class ReplayWatcher:
    """Follows the console's pending replays until each one's outcome is known (`run`, an app
    task). `lock` is held while replays are produced and added, so a deliveries watch is
    never closed between the two. One deliveries watch per backend (`backends`, the short
    names of the APIs this worker maps for), each on that backend's deliveries topic."""

    def __init__(
        self,
        settings: Settings,
        topics: TopicNames,
        group_id: str,
        replays: ReplayLog,
        feed: FailureFeed,
        *,
        backends: Sequence[str] = ("autopilot",),
    ) -> None:
        self._settings = settings
        self._retry_topic = topics.retry
        self._group_id = group_id
        self.replays = replays
        self.feed = feed
        self.deliveries = {
            name: DeliveriesWatch(settings, topics.for_backend(name).deliveries)
            for name in backends
        }
        self.lock = asyncio.Lock()
        self._admin: AIOKafkaAdminClient | None = None

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.check()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("console: following replays failed", exc_info=True)
                    await self._close_admin()
                await asyncio.sleep(_CHECK_EVERY_S)
        finally:
            await self._close_admin()
            for watch in self.deliveries.values():
                await watch.close()

    async def check(self) -> None:
        """One look at what the topics say of the pending replays."""
        replays = self.replays
        for watch in self.deliveries.values():
            if watch.armed:
                for outcome, written_ms in await watch.poll():
                    replays.note_outcome(outcome, written_ms)
        replays.note_failures(self.feed.ring)
        async with self.lock:
            awaited = {r.backend for r in replays.pending()}
            for name, watch in self.deliveries.items():
                if watch.armed and name not in awaited:
                    await watch.close()
        unconfirmed = [r for r in replays.pending() if r.state is ReplayState.WAITING]
        if not unconfirmed:
            return
        waiting = [r for r in unconfirmed if r.dead_letter_ends is None]
        if waiting:
            committed = await self._committed({r.retry[0] for r in waiting})
            for replay in waiting:
                partition, offset = replay.retry
                if committed.get(partition, -1) > offset:
                    replay.dead_letter_ends = await self.feed.end_offsets()
        for replay in unconfirmed:
            ends = replay.dead_letter_ends
            if ends is None or not self.feed.read_up_to(ends):
                continue
            replays.note_failures(self.feed.ring)
            if replay.state is ReplayState.WAITING:
                if replay.delivery:
                    replay.state = ReplayState.IN_DELIVERY
                else:
                    replay.state = ReplayState.DONE
                    replay.detail = f"ran through {replay.target} without failing"

    async def _committed(self, partitions: set[int]) -> dict[int, int]:
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                **kafka_client_config(self._settings),
                client_id=f"{self._settings.worker_app_id}-console",
            )
            await admin.start()
            self._admin = admin
        tps = [TopicPartition(self._retry_topic, p) for p in sorted(partitions)]
        offsets = await self._admin.list_consumer_group_offsets(self._group_id, partitions=tps)
        return {tp.partition: meta.offset for tp, meta in offsets.items()}

    async def _close_admin(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.close()


async def replay_letters(
    settings: Settings,
    topics: TopicNames,
    refs: Sequence[LetterRef],
    send_each: SendEach,
    watcher: ReplayWatcher,
    *,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Replay the letters at `refs` (see the module docstring); what was replayed and skipped,
    as the console's JSON answer."""
    letters = await read_refs(settings, refs)
    plan = plan_replay(letters, retry_topic=topics.retry, max_replays=DEFAULT_MAX_REPLAYS)
    replayed: list[dict[str, Any]] = []
    async with watcher.lock:
        for backend in {delivery_backend(item.target.pipeline) for item in plan.replays}:
            watch = watcher.deliveries.get(backend) if backend is not None else None
            if watch is not None:
                await watch.arm()
        positions = await send_each([item.record for item in plan.replays])
        at = clock()
        for item, retry in zip(plan.replays, positions, strict=True):
            _, message_id, contact = identify(item.letter.value)
            watcher.replays.add(
                Replay(
                    ref=item.letter.ref,
                    target=item.target,
                    number=item.replay_number,
                    at=at,
                    retry=retry,
                    origin=item.letter.origin,
                    message_id=message_id,
                    contact=contact,
                )
            )
            replayed.append(
                {
                    "ref": str(item.letter.ref),
                    "target": str(item.target),
                    "replay": item.replay_number,
                    "retry": f"{topics.retry}[{retry[0]}]@{retry[1]}",
                }
            )
    skipped = [
        {"ref": str(letter.ref), "reason": reason}
        for letters_, reason in (
            (plan.at_max_replays, f"replayed {DEFAULT_MAX_REPLAYS} times already"),
            (plan.superseded, "superseded by a later replay"),
            (plan.without_target, "the letter does not say which stage failed it"),
        )
        for letter in letters_
    ]
    if replayed:
        log.info(
            "console: replayed %s onto %s",
            ", ".join(r["ref"] for r in replayed),
            topics.retry,
        )
    return {"replayed": replayed, "skipped": skipped}
