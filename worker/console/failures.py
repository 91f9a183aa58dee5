"""The recent failures the console lists: the latest dead letters, held in a bounded ring.

`FailureFeed` is a small consumer of the dead-letter topic (no consumer group, nothing
committed): at start it reads at most `RING_SIZE` letters back on each partition, then follows
the topic. The ring holds at most `RING_SIZE` letters, the latest by failure time. Each is
shown as a `Failure`, masked of every secret and with its payload cut at `PAYLOAD_CHARS`, made
when first asked for (a letter of more than `PAYLOAD_CHARS` bytes at once, so the ring and the
records waiting to be read out hold a few MiB a partition at most). The full letter stays on
the topic (`python -m worker dlq show PARTITION@OFFSET`), and a replay reads it from there.

Bad input comes in bursts, and a letter costs the feed more than the worker's own work on an
input: once loaded, the feed reads a pause (`FOLLOW_PAUSE_S`) at a time, skips what came
meanwhile beyond the latest `RING_SIZE` of each partition, and reads a record out only when the
ring is next asked (`FailureRing.add_record`).

The ring covers every partition of the topic, so every replica's console lists the same
letters; searching beyond it reads the whole topic on demand (`search_topic`).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from worker.pipeline.dead_letters import DeadLetterHeaders
from worker.pipeline.letters import DeadLetter, LetterRef, Origin, render_bytes
from worker.pipeline.logs import message_id_in
from worker.pipeline.records import header
from worker.runtime.dead_letter_topic import letter_of, partitions_of, read_all
from worker.runtime.kafka_connection import kafka_client_config
from worker.settings import Settings

__all__ = [
    "PAYLOAD_CHARS",
    "RING_SIZE",
    "Failure",
    "FailureFeed",
    "FailureRing",
    "contact_of",
    "identify",
    "matches",
    "search_topic",
]

log = logging.getLogger(__name__)

#: The latest dead letters the console holds.
RING_SIZE = 500
#: A payload is kept (and shown) up to this many characters.
PAYLOAD_CHARS = 4096
#: A search of the whole topic lists at most this many letters (the latest it found).
SEARCH_LIMIT = 100
#: ... and gives up after this long, saying how far it got.
SEARCH_TIMEOUT_S = 30.0
#: Payloads larger than this are not parsed for their id and contact.
_MAX_PARSE_BYTES = 256 * 1024
_RETRY_AFTER_S = 5.0
#: Once loaded, the feed waits this long after a read that found letters: a burst gathers, and
#: the ring's page is at most this much late.
FOLLOW_PAUSE_S = 1.0

Masker = Callable[[str], str]


def _email_of(value: object) -> str | None:
    if isinstance(value, dict):
        email = value.get("email") or value.get("Email")
        if isinstance(email, str) and email:
            return email
    return None


def contact_of(data: object) -> str | None:
    """Who a payload is about, best effort: a request descriptor's `contact`, an email event's
    contact email (or id), a Segment call's traits or properties email, else its userId or
    anonymousId."""
    if not isinstance(data, dict):
        return None
    contact = data.get("contact")
    if isinstance(contact, str) and contact:
        return contact
    if isinstance(contact, dict):
        found = _email_of(contact) or contact.get("contact_id")
        if isinstance(found, str) and found:
            return found
    context = data.get("context")
    for holder in (
        data.get("traits"),
        data.get("properties"),
        context.get("traits") if isinstance(context, dict) else None,
        data,
    ):
        email = _email_of(holder)
        if email:
            return email
    for name in ("userId", "anonymousId"):
        value = data.get(name)
        if isinstance(value, str | int) and str(value):
            return str(value)
    return None


def identify(value: bytes) -> tuple[Any, str | None, str | None]:
    """A payload's parsed JSON (None when it is not JSON or too large to parse), its id (Segment
    `messageId`, a descriptor's `message_id`, an email event's `id`) and its contact."""
    if len(value) > _MAX_PARSE_BYTES:
        return None, None, None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None, None, None
    return data, message_id_in(data), contact_of(data)


def matches(query: str, *values: str | None) -> bool:
    """Whether `query` (any case, spaces around it ignored) is in any of `values`."""
    needle = query.strip().lower()
    return bool(needle) and any(needle in value.lower() for value in values if value)


def _attempts(letter: DeadLetter) -> int | None:
    raw = header(letter.headers, DeadLetterHeaders.ATTEMPTS)
    if raw is None:
        return None
    try:
        attempts = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return len(attempts) if isinstance(attempts, list) else None


@dataclass(frozen=True, slots=True)
class Failure:
    """One dead letter as the console shows it; every text is masked of every secret."""

    ref: LetterRef
    failed_at: datetime
    pipeline: str
    stage: str
    error_class: str
    status: str
    message: str
    attempts: int | None
    replay_count: int
    origin: Origin | None
    message_id: str | None
    contact: str | None
    #: "json" (pretty-printed), "utf-8" or "base64"
    payload_encoding: str
    payload: str
    payload_bytes: int
    response_body: str | None

    @property
    def truncated(self) -> bool:
        return len(self.payload) >= PAYLOAD_CHARS

    @classmethod
    def of(
        cls,
        letter: DeadLetter,
        mask: Masker,
        identified: tuple[Any, str | None, str | None] | None = None,
    ) -> Failure:
        """`letter` as the page shows it; `identified` is `identify(letter.value)` when the
        caller has it already."""
        data, message_id, contact = identified or identify(letter.value)
        if data is not None:
            # re-encoded before masking: a secret written with escapes in the JSON is masked too
            encoding, text = "json", orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
        else:
            encoding, text = render_bytes(letter.value)
        body = header(letter.headers, DeadLetterHeaders.RESPONSE_BODY)
        return cls(
            ref=letter.ref,
            failed_at=letter.failed_at,
            pipeline=letter.pipeline or "?",
            stage=letter.stage or "?",
            error_class=letter.error_class or "?",
            status=letter.status or "?",
            message=mask(letter.message),
            attempts=_attempts(letter),
            replay_count=letter.replay_count,
            origin=letter.origin,
            message_id=mask(message_id) if message_id else None,
            contact=mask(contact) if contact else None,
            payload_encoding=encoding,
            payload=mask(text)[:PAYLOAD_CHARS],
            payload_bytes=len(letter.value),
            response_body=mask(body.decode(errors="replace")) if body else None,
        )

    def matches(self, query: str) -> bool:
        """Whether `query` (any case) is in its messageId or its contact."""
        return matches(query, self.message_id, self.contact)


_AgeKey = tuple[datetime, LetterRef]

#: A letter whose payload is larger than this is made a `Failure` as it is read (its payload cut
#: to `PAYLOAD_CHARS`), so that what the ring holds stays small; smaller ones when first asked for.
_KEPT_RAW_BYTES = PAYLOAD_CHARS


class _Held:
    """One letter in the ring: what ordering and replays need, read from its headers at once;
    the `Failure` the page shows (a parse, a pretty-print, a mask of every text) made when first
    asked for, then kept. A burst of bad input sends thousands of letters through the ring, and
    most leave it before anyone looks."""

    __slots__ = ("_failure", "_letter", "_mask", "key", "origin", "replay_count")

    def __init__(self, shown: Failure | DeadLetter, mask: Masker | None = None) -> None:
        """`shown` a `Failure` made already, or a letter to show as `Failure.of(letter, mask)`."""
        self.key: _AgeKey = (shown.failed_at, shown.ref)
        self.origin = shown.origin
        self.replay_count = shown.replay_count
        self._mask = mask
        self._failure: Failure | None = shown if isinstance(shown, Failure) else None
        self._letter: DeadLetter | None = None if isinstance(shown, Failure) else shown

    @property
    def failure(self) -> Failure:
        if self._failure is None:
            assert self._letter is not None  # one or the other, always
            assert self._mask is not None  # given with a letter
            self._failure = Failure.of(self._letter, self._mask)
            self._letter = None
        return self._failure


def _age_key(held: _Held) -> _AgeKey:
    return held.key


class FailureRing:
    """The `size` latest failures (by failure time, whatever order the partitions are read in),
    with what the page asks of them. Letters added with `add_letter` are made `Failure`s only
    when asked for (`_Held`)."""

    def __init__(self, size: int = RING_SIZE) -> None:
        self._held: list[_Held] = []  # oldest first
        #: records of the dead-letter topic not read out yet, the latest `size` per partition
        self._unread: dict[int, deque[tuple[Any, Masker]]] = {}
        self.size = size

    def add(self, failure: Failure) -> None:
        self._add(_Held(failure))

    def add_letter(self, letter: DeadLetter, mask: Masker) -> None:
        """`letter`, to be shown as `Failure.of(letter, mask)`: made now when its payload is
        larger than `_KEPT_RAW_BYTES` (then cut), else when first asked for."""
        large = len(letter.value) > _KEPT_RAW_BYTES
        self._add(_Held(Failure.of(letter, mask)) if large else _Held(letter, mask))

    def add_record(self, record: Any, mask: Masker) -> None:
        """A record of the dead-letter topic, read out (`letter_of`, its failure time) when the
        ring is next asked: of a burst, only the latest `size` of each partition ever are."""
        value = record.value
        if value is not None and len(value) > _KEPT_RAW_BYTES:
            self.add_letter(letter_of(record), mask)  # made at once, its payload cut
            return
        unread = self._unread.get(record.partition)
        if unread is None:
            unread = self._unread[record.partition] = deque(maxlen=self.size)
        unread.append((record, mask))

    def _settle(self) -> None:
        if self._unread:
            unread, self._unread = self._unread, {}
            for records in unread.values():
                for record, mask in records:
                    self.add_letter(letter_of(record), mask)

    def _add(self, held: _Held) -> None:
        kept = self._held
        if len(kept) >= self.size and held.key <= kept[0].key:
            return  # older than every one kept
        bisect.insort(kept, held, key=_age_key)
        if len(kept) > self.size:
            del kept[0]

    def __len__(self) -> int:
        self._settle()
        return len(self._held)

    def __iter__(self) -> Iterator[Failure]:
        self._settle()
        return (held.failure for held in self._held)

    def latest(self, query: str | None = None) -> list[Failure]:
        """Newest first (by failure time); only those matching `query` when given."""
        self._settle()
        newest_first = [held.failure for held in reversed(self._held)]
        return [f for f in newest_first if f.matches(query)] if query else newest_first

    def get(self, ref: LetterRef) -> Failure | None:
        self._settle()
        return next((held.failure for held in self._held if held.key[1] == ref), None)

    def later_failures(self, origins: Collection[Origin] | None = None) -> dict[Origin, Failure]:
        """Per input message (of `origins`, when given), its failure with the highest replay
        count (the latest one)."""
        self._settle()
        latest: dict[Origin, _Held] = {}
        for held in self._held:
            origin = held.origin
            if origin is None or (origins is not None and origin not in origins):
                continue
            seen = latest.get(origin)
            if seen is None or (held.replay_count, held.key[0]) > (
                seen.replay_count,
                seen.key[0],
            ):
                latest[origin] = held
        return {origin: held.failure for origin, held in latest.items()}


class FailureFeed:
    """Follows the dead-letter topic into a `FailureRing` (`run`, an app task)."""

    def __init__(self, settings: Settings, mask: Masker, ring: FailureRing | None = None) -> None:
        self._settings = settings
        self._mask = mask
        self.ring = ring or FailureRing()
        #: set once the letters already on the topic at start are read
        self.loaded = asyncio.Event()
        self.error: str | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._positions: dict[int, int] = {}
        self._last_warning = 0.0
        #: records read off the topic since start (a burst's skipped ones are not)
        self.records_read = 0

    async def run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  (the console must never stop the worker)
                self.error = f"{type(exc).__name__}: {exc}"[:300]
                if time.monotonic() - self._last_warning > 60:
                    self._last_warning = time.monotonic()
                    log.warning("console: reading the dead-letter topic failed: %s", self.error)
                await asyncio.sleep(_RETRY_AFTER_S)

    async def _follow(self) -> None:
        settings = self._settings
        tps = await partitions_of(settings, settings.topic_dead_letters)
        consumer = AIOKafkaConsumer(
            **kafka_client_config(settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{settings.worker_app_id}-console",
        )
        await consumer.start()
        self._consumer = consumer
        try:
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            begins = await consumer.beginning_offsets(tps)
            for tp in tps:
                consumer.seek(tp, max(begins[tp], ends[tp] - self.ring.size))
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=500)
                for records in batches.values():
                    self.records_read += len(records)
                    for record in records:
                        self.ring.add_record(record, self._mask)
                for tp in tps:
                    self._positions[tp.partition] = await consumer.position(tp)
                self.error = None
                if not self.loaded.is_set():
                    if all(self._positions.get(tp.partition, 0) >= ends[tp] for tp in tps):
                        self.loaded.set()
                elif batches:
                    await asyncio.sleep(FOLLOW_PAUSE_S)
                    self._skip_what_the_ring_would_not_keep(consumer, tps)
        finally:
            self._consumer = None
            await consumer.stop()

    def _skip_what_the_ring_would_not_keep(
        self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]
    ) -> None:
        """Past a partition's letters older than its latest `RING_SIZE`: a burst of bad input is
        read a pause at a time, and what came meanwhile beyond what the ring keeps is not read
        at all (as at start). The highwater is what the last fetch said: no request."""
        for tp in tps:
            highwater = consumer.highwater(tp)
            position = self._positions.get(tp.partition, 0)
            if highwater is not None and highwater - position > self.ring.size:
                consumer.seek(tp, highwater - self.ring.size)
                self._positions[tp.partition] = highwater - self.ring.size

    async def end_offsets(self) -> dict[int, int] | None:
        """The topic's end offsets now, by partition; None while not connected."""
        consumer = self._consumer
        if consumer is None:
            return None
        ends: dict[TopicPartition, int] = await consumer.end_offsets(list(consumer.assignment()))
        return {tp.partition: offset for tp, offset in ends.items()}

    def read_up_to(self, ends: dict[int, int]) -> bool:
        """Whether every letter below `ends` (by partition) was read into the ring (or skipped,
        being older than the latest `RING_SIZE` of its partition when the feed looked)."""
        return all(self._positions.get(p, 0) >= end for p, end in ends.items())


async def search_topic(
    settings: Settings, query: str, mask: Masker, *, limit: int = SEARCH_LIMIT
) -> tuple[list[Failure], int, bool]:
    """The latest `limit` letters on the whole topic whose messageId or contact holds `query`,
    newest first; how many letters were read; whether the whole topic was (False: it took
    longer than `SEARCH_TIMEOUT_S`)."""
    found: deque[Failure] = deque(maxlen=limit)
    read = 0
    complete = True
    try:
        async with asyncio.timeout(SEARCH_TIMEOUT_S):
            async for letter in read_all(settings):
                read += 1
                identified = identify(letter.value)
                if matches(query, *identified[1:]):
                    found.append(Failure.of(letter, mask, identified))
    except TimeoutError:
        complete = False
    ordered = sorted(found, key=lambda f: (f.failed_at, f.ref), reverse=True)
    return ordered, read, complete
