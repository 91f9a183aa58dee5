"""The per-message loop every agent uses: decode, call a pure function, send, route failures.

`Stage.process` takes a batch of consumed messages, hands every output and every dead letter
of the batch to the producer, and returns what completes once Kafka acknowledged them all
(acks=all); only then, and after every earlier batch, may the faust shell ack the batch, so an
offset is never committed ahead of what it produced. A failure is a `WorkerError` whose `fate`
decides where the message goes; an exception we did not foresee is wrapped as `UnexpectedError`
and dead-lettered. Nothing escapes except `FatalError` (the shell stops the worker without
acking) and a failure to write to Kafka (the same). Bad data never stops a stage; the `Breaker`
pauses a pipeline only on our own bugs.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from worker.errors import Fate, UnexpectedError, WorkerError
from worker.pipeline.breaker import Breaker
from worker.pipeline.dead_letters import dead_letter
from worker.pipeline.logs import log_fields
from worker.pipeline.records import InboundMessage, OutboundRecord

__all__ = [
    "DEAD_LETTER_LINES_PER_S",
    "FailedAfter",
    "Handler",
    "LineBudget",
    "Sender",
    "Stage",
    "StageStats",
    "without_tracebacks",
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
class StageStats:
    """Counters a pipeline keeps; `worker.runtime.metrics` exports them."""

    consumed: int = 0
    produced: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    #: the same dead letters by (error class, status): what the console shows
    dead_lettered_status: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: seconds spent in `Stage.route` (decode, mapping, failure routing; no Kafka I/O)
    mapping_seconds: float = 0.0


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


E = TypeVar("E", bound=BaseException)


def without_tracebacks(error: E) -> E:
    """`error`, and the exceptions it was raised from or while handling, without tracebacks.

    For an error kept as a value: a traceback holds the frames it went through (and each frame
    its caller), and a frame that holds the error makes a cycle only the garbage collector
    frees, with everything those frames held: one per skip and per dead letter (docs/FIGURES.md,
    "Lean state", has what it cost). Our errors carry what they mean in their message;
    an unexpected error's traceback is logged where it is caught.
    """
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        link.__traceback__ = None
        link = link.__cause__ or link.__context__
    return error


@dataclass
class Stage:
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
    stats: StageStats = field(default_factory=StageStats)
    dead_letter_lines: LineBudget = field(
        default_factory=lambda: LineBudget(DEAD_LETTER_LINES_PER_S)
    )
    #: skip reasons this stage has logged once already (each reason's first skip is logged, so
    #: a set-up that skips everything, such as tracks without a trigger, shows in the logs)
    skip_reasons_logged: set[str] = field(default_factory=set)

    def route(self, messages: Sequence[InboundMessage]) -> list[OutboundRecord]:
        """Every record the batch produces, dead letters included, in input order."""
        started = time.perf_counter()
        stats, apply, forward = self.stats, self.apply, self.forward_topic
        records: list[OutboundRecord] = []
        ended = 0  # messages that ended well, counted in the breaker before the next failure
        for message in messages:
            stats.consumed += 1
            outputs, error = apply(message)
            stats.produced += len(outputs)
            records.extend(outputs)
            if error is None:
                if forward is None or not _forwards(outputs, forward):
                    ended += 1
            else:
                if ended:
                    self.breaker.record_ok(ended)
                    ended = 0
                records.extend(self.route_failure(message, error))
        if ended:
            self.breaker.record_ok(ended)
        stats.mapping_seconds += time.perf_counter() - started
        return records

    def apply(self, message: InboundMessage) -> tuple[Sequence[OutboundRecord], WorkerError | None]:
        """The handler's records for `message`, and the error it failed with, if it did.

        The error is kept without tracebacks (`without_tracebacks`)."""
        try:
            result = self.handler(message)
        except WorkerError as error:
            return (), without_tracebacks(error)
        except Exception as exc:
            log.exception("unexpected error in %s/%s", self.name, self.stage)
            return (), UnexpectedError(f"{type(exc).__name__}: {exc}")
        if isinstance(result, FailedAfter):
            return result.records, without_tracebacks(result.error)
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
            if error.message not in self.skip_reasons_logged:
                self.skip_reasons_logged.add(error.message)
                topic, partition, offset, _ = message.origin()
                log.info(
                    "skipped %s[%d]@%d in %s/%s: %s (the first skip for this reason; the rest "
                    "are counted in autopilot_worker_messages_skipped_total, not logged)",
                    topic,
                    partition,
                    offset,
                    self.name,
                    self.stage,
                    error.message,
                    extra=log_fields(self.name, self.stage, message),
                )
            return []
        if error.fate is Fate.STOP or error.fate is Fate.GIVE_BACK:
            raise error  # not a message's fate: the whole batch's (see worker.errors)
        if count_in_breaker:
            self.breaker.record(unexpected=isinstance(error, UnexpectedError))
        self.stats.dead_lettered[type(error).__name__] += 1
        self.stats.dead_lettered_status[type(error).__name__, str(error.status)] += 1
        unlogged = self.dead_letter_lines.take()
        if unlogged is not None:
            topic, partition, offset, _ = message.origin()  # as the dead letter's headers say
            log.warning(
                "dead-lettered %s[%d]@%d in %s/%s: %s%s",
                topic,
                partition,
                offset,
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


def _forwards(records: Sequence[OutboundRecord], topic: str) -> bool:
    """Whether one of `records` goes to `topic` (a loop: a generator per message costs more)."""
    for record in records:  # noqa: SIM110
        if record.topic == topic:
            return True
    return False
