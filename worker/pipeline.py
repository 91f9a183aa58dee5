"""The per-message loop every agent uses: decode, call a pure function, send, route failures.

`Pipeline.process` takes a batch of consumed messages, hands every output and every dead letter
of the batch to the producer, and returns what completes once Kafka acknowledged them all
(acks=all); only then, and after every earlier batch, may the faust shell ack the batch, so an
offset is never committed ahead of what it produced. A failure is a `WorkerError` whose `fate`
decides where the message goes; an exception we did not foresee is wrapped as `UnexpectedError`
and dead-lettered. Nothing escapes except `FatalError` (the shell stops the worker without
acking) and a failure to write to Kafka (the same). Bad data never stops a stage; the `Breaker`
pauses a pipeline only on our own bugs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from worker.dlq import dead_letter
from worker.errors import Fate, PipelinePaused, UnexpectedError, WorkerError
from worker.logs import log_fields
from worker.records import InboundMessage, OutboundRecord

__all__ = [
    "DEAD_LETTER_LINES_PER_S",
    "Breaker",
    "FailedAfter",
    "Handler",
    "LineBudget",
    "Pipeline",
    "PipelineStats",
    "Sender",
]

log = logging.getLogger(__name__)

#: Dead-letter warnings one stage logs in a second at most: a producer pouring bad input must
#: not pour it into the logs too. Every dead letter is still counted (metrics) and kept on the
#: dead-letter topic (`dlq list`), and the next line logged says how many were not.
DEAD_LETTER_LINES_PER_S = 10


@dataclass(frozen=True, slots=True)
class FailedAfter:
    """A handler's result when its message failed after producing records that stand on their
    own: an identity learned from a Segment call that is then skipped or dead-lettered."""

    records: Sequence[OutboundRecord]
    error: WorkerError


#: A pure step: one consumed message in, the records to produce out; raises `WorkerError`
#: (or returns `FailedAfter` when some records must be sent all the same).
Handler = Callable[[InboundMessage], Sequence[OutboundRecord] | FailedAfter]


class Sender(Protocol):
    async def send(self, records: Sequence[OutboundRecord]) -> Awaitable[object]:
        """Hand `records` to the producer in order; the result completes once Kafka acknowledged
        every one, or fails with the first failure."""


@dataclass
class PipelineStats:
    """Counters a pipeline keeps; `worker.observability` exports them."""

    consumed: int = 0
    produced: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    #: seconds spent in `Pipeline.route` (decode, mapping, failure routing; no Kafka I/O)
    mapping_seconds: float = 0.0


class Breaker:
    """Pauses a pipeline whose own code fails: most recent messages ended in `UnexpectedError`.

    Bad data never counts: a burst of invalid or refused messages, however concentrated, is what
    the dead-letter topic is for, and the stream moves on. A bug fails messages whatever they
    hold; over a sliding window of the last `window` messages, once at least `min_messages`
    were seen, an `UnexpectedError` ratio above `max_ratio` trips the breaker: one critical line,
    and the pipeline's stages take no more messages (the batch in hand is finished, its letters
    replayable) until `resume` (an operator) or a restart (a new deploy). Pausing rather than
    exiting means a restart does not loop on the same batch, and the other pipelines and the
    ingest keep running.
    """

    def __init__(
        self, *, window: int, min_messages: int, max_ratio: float, pipeline: str = ""
    ) -> None:
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._failed = 0
        self._min_messages = min_messages
        self._max_ratio = max_ratio
        self.pipeline = pipeline
        #: why the pipeline is paused; None while it runs
        self.tripped: PipelinePaused | None = None
        #: when it was paused (seconds since the epoch)
        self.paused_since: float | None = None
        self._resumed = asyncio.Event()
        self._tripped_now = asyncio.Event()

    @property
    def paused(self) -> bool:
        return self.tripped is not None

    def record(self, *, unexpected: bool) -> None:
        """Count one message where it ended; `unexpected` when it failed in our own code."""
        if len(self._outcomes) == self._outcomes.maxlen and self._outcomes[0]:
            self._failed -= 1
        self._outcomes.append(unexpected)
        self._failed += unexpected
        seen = len(self._outcomes)
        if (
            self.tripped is None
            and seen >= self._min_messages
            and self._failed / seen > self._max_ratio
        ):
            self.tripped = PipelinePaused(
                f"{self._failed} of the last {seen} messages failed in the worker's own code "
                f"(UnexpectedError; limit {self._max_ratio:.0%}): a bug, not bad data; paused "
                "until resumed (POST /admin/pipelines/<name>/resume) or redeployed"
            )
            self.paused_since = time.time()
            self._resumed.clear()
            self._tripped_now.set()
            log.critical("pipeline %s paused: %s", self.pipeline or "?", self.tripped)

    def resume(self) -> bool:
        """Take messages again, with a fresh window; False when it was not paused."""
        if self.tripped is None:
            return False
        self.tripped = None
        self.paused_since = None
        self._outcomes.clear()
        self._failed = 0
        self._tripped_now.clear()
        self._resumed.set()
        log.warning("pipeline %s resumed by an operator", self.pipeline or "?")
        return True

    async def wait_resumed(self) -> None:
        """Return once the pipeline runs (at once when it is not paused)."""
        while self.tripped is not None:
            await self._resumed.wait()

    async def wait_tripped(self) -> None:
        """Return once the pipeline is paused (at once when it is)."""
        await self._tripped_now.wait()


class LineBudget:
    """At most `per_second` log lines in each one-second window; counts the lines it refuses."""

    def __init__(self, per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_second = per_second
        self._clock = clock
        self._window_start = -1.0
        self._used = 0
        self._refused = 0

    def take(self) -> int | None:
        """None when this second's lines are spent (the line is counted as refused); otherwise
        how many lines were refused since the last one taken."""
        now = self._clock()
        if now - self._window_start >= 1.0:
            self._window_start, self._used = now, 0
        if self._used >= self._per_second:
            self._refused += 1
            return None
        self._used += 1
        refused, self._refused = self._refused, 0
        return refused


@dataclass
class Pipeline:
    """One stage of one pipeline: a handler plus where its failures go."""

    name: str
    stage: str
    handler: Handler
    sender: Sender
    dead_letter_topic: str
    breaker: Breaker
    secrets: tuple[str, ...] = ()
    #: The internal topic this stage forwards messages on to a later stage of its pipeline: a
    #: message forwarded there is not done yet, so it counts in the breaker only where it ends.
    forward_topic: str | None = None
    stats: PipelineStats = field(default_factory=PipelineStats)
    dead_letter_lines: LineBudget = field(
        default_factory=lambda: LineBudget(DEAD_LETTER_LINES_PER_S)
    )

    def route(self, messages: Sequence[InboundMessage]) -> list[OutboundRecord]:
        """Every record the batch produces, dead letters included, in input order."""
        started = time.perf_counter()
        records: list[OutboundRecord] = []
        for message in messages:
            self.stats.consumed += 1
            outputs, error = self.apply(message)
            self.stats.produced += len(outputs)
            records.extend(outputs)
            if error is None:
                if not any(r.topic == self.forward_topic for r in outputs):
                    self.breaker.record(unexpected=False)
            else:
                records.extend(self.route_failure(message, error))
        self.stats.mapping_seconds += time.perf_counter() - started
        return records

    def apply(self, message: InboundMessage) -> tuple[Sequence[OutboundRecord], WorkerError | None]:
        """The handler's records for `message`, and the error it failed with, if it did."""
        try:
            result = self.handler(message)
        except WorkerError as error:
            return (), error
        except Exception as exc:
            log.exception("unexpected error in %s/%s", self.name, self.stage)
            return (), UnexpectedError(f"{type(exc).__name__}: {exc}")
        if isinstance(result, FailedAfter):
            return result.records, result.error
        return result, None

    async def process(self, messages: Sequence[InboundMessage]) -> Awaitable[object]:
        """Route the batch and hand its records to the sender; the result completes once Kafka
        acknowledged them all."""
        return await self.sender.send(self.route(messages))

    def route_failure(
        self,
        message: InboundMessage,
        error: WorkerError,
        *,
        attempts: str | None = None,
        count_in_breaker: bool = True,
    ) -> list[OutboundRecord]:
        """Where a failed message goes, by its error's fate: nowhere (skip) or a dead letter.

        Replays pass `count_in_breaker=False`: replaying letters that are still bad must not
        pause the pipeline.
        """
        if error.fate is Fate.SKIP:
            if count_in_breaker:
                self.breaker.record(unexpected=False)
            self.stats.skipped[error.message] += 1
            return []
        if error.fate is Fate.STOP or error.fate is Fate.GIVE_BACK:
            raise error  # not a message's fate: the whole batch's (see worker.errors)
        if count_in_breaker:
            self.breaker.record(unexpected=isinstance(error, UnexpectedError))
        self.stats.dead_lettered[type(error).__name__] += 1
        unlogged = self.dead_letter_lines.take()
        if unlogged is not None:
            log.warning(
                "dead-lettered %s[%d]@%d in %s/%s: %s%s",
                message.topic,
                message.partition,
                message.offset,
                self.name,
                self.stage,
                error.message,
                f" ({unlogged} earlier dead letters of this stage not logged)" if unlogged else "",
                extra=log_fields(self.name, self.stage, message, error_class=type(error).__name__),
            )
        return [
            dead_letter(
                message,
                error,
                topic=self.dead_letter_topic,
                pipeline=self.name,
                stage=self.stage,
                secrets=self.secrets,
                attempts=attempts,
            )
        ]
