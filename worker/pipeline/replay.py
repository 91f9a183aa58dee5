"""Replayed dead letters: how `dlq replay` rewrites them, and how the worker runs them again.

`python -m worker dlq replay` (`worker.tools.dlq`) never writes to a shared input topic: it puts
each selected dead letter on the worker-private retry topic (`<app id>.retry`) with the
original key, value and producer headers, and rewrites the headers as `replay_headers` says:

- every `__autopilot.errors.*` header is dropped except `first.failure.time`;
- `__autopilot.errors.replay.count` is the letter's count plus one (absent counts as 0);
- `__autopilot.replay.target` names the stage to run again, `<pipeline>/<stage>`;
- `__autopilot.origin.*` name the input the letter came from, so a letter that fails again
  names the same input topic, partition and offset, not the retry topic.

In the worker, `replay_handler` (the retry topic's handler) reads the target and runs the
message through that registered stage's handler (the registry it is given): a replayed source
event goes through source intake again. The stage's outputs go where they always go; a failure
is dead-lettered again as that stage's, and `dead_letters.dead_letter` keeps `replay.count` and
`first.failure.time`, so the letter shows how often it was replayed. The CLI refuses letters
whose count has reached `--max-replays`: that count, carried through every failure, is what
stops a replay loop.

The key is kept, and the retry topic has the same partition count as every other topic, so a
replayed message lands on the partition number its key has everywhere; faust assigns equal
partition numbers of equally partitioned topics to the same worker, so a `map` stage run from
the retry topic finds the table rows of its key in this process, as it would on its own topic.

A target that names no registered stage (a delivery letter, say) is dead-lettered as the
retry stage's own, `replay/retry`, with its target kept, so a later replay counts on. Replays
never feed a dead-letter breaker: replaying letters that are still bad is expected to fail,
and must not stop the worker as a bad deploy would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from worker.errors import ValidationError, WorkerError
from worker.pipeline.dead_letters import DLQ_PREFIX, DeadLetterHeaders
from worker.pipeline.records import ORIGIN_PREFIX, Headers, InboundMessage, OutboundRecord, header
from worker.pipeline.stage import Stage

__all__ = [
    "REPLAY_PIPELINE",
    "REPLAY_PREFIX",
    "REPLAY_STAGE",
    "REPLAY_TARGET",
    "ReplayTarget",
    "replay_count",
    "replay_handler",
    "replay_headers",
    "replay_through",
]

log = logging.getLogger(__name__)

REPLAY_PREFIX = "__autopilot.replay."
#: `<pipeline>/<stage>` of the stage a replayed message is run through.
REPLAY_TARGET = REPLAY_PREFIX + "target"

#: The name and stage the retry topic's own `Stage` is built with (`Runtime.build_stage`).
REPLAY_PIPELINE = "replay"
REPLAY_STAGE = "retry"

_KEPT_ERROR_HEADERS = frozenset({DeadLetterHeaders.FIRST_FAILURE})


@dataclass(frozen=True, slots=True)
class ReplayTarget:
    """The pipeline stage a replayed message is run through."""

    pipeline: str
    stage: str

    def __str__(self) -> str:
        return f"{self.pipeline}/{self.stage}"

    def encode(self) -> bytes:
        return str(self).encode()

    @classmethod
    def parse(cls, raw: bytes | str) -> ReplayTarget:
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        pipeline, sep, stage = text.partition("/")
        if not sep or not pipeline or not stage or "/" in stage:
            raise ValueError(f"a replay target is <pipeline>/<stage>, not {text!r}")
        return cls(pipeline, stage)

    @classmethod
    def of_dead_letter(cls, headers: Headers) -> ReplayTarget | None:
        """The stage that dead-lettered a letter; None when the headers do not say.

        A letter the retry stage itself dead-lettered (its target could not be run) is replayed
        to the target it was given, so the letter keeps counting towards `--max-replays`.
        """
        pipeline = header(headers, DeadLetterHeaders.PIPELINE)
        stage = header(headers, DeadLetterHeaders.STAGE)
        if pipeline is None or stage is None or not pipeline or not stage:
            return None
        target = cls(pipeline.decode(errors="replace"), stage.decode(errors="replace"))
        if (target.pipeline, target.stage) == (REPLAY_PIPELINE, REPLAY_STAGE):
            earlier = header(headers, REPLAY_TARGET)
            try:
                return cls.parse(earlier) if earlier is not None else None
            except ValueError:
                return None
        return target


def replay_count(headers: Headers) -> int:
    """How often the message was replayed already (0 when the header is absent or garbled)."""
    raw = header(headers, DeadLetterHeaders.REPLAY_COUNT)
    try:
        return max(int(raw), 0) if raw is not None else 0
    except ValueError:
        return 0


def replay_headers(
    headers: Headers, target: ReplayTarget, *, key: bytes | None = None
) -> list[tuple[str, bytes]]:
    """A dead letter's headers rewritten for the retry topic (see the module docstring).

    `key` is the dead letter's key, the producer's own: kept as the origin key, so a replay that
    fails again is dead-lettered under it."""
    kept = [
        (k, v)
        for k, v in headers
        if not k.startswith((DLQ_PREFIX, REPLAY_PREFIX, ORIGIN_PREFIX)) or k in _KEPT_ERROR_HEADERS
    ]
    origin: list[tuple[str, bytes]] = []
    origin_topic = header(headers, DeadLetterHeaders.TOPIC)
    if origin_topic is not None:
        for name, source in (
            ("topic", DeadLetterHeaders.TOPIC),
            ("partition", DeadLetterHeaders.PARTITION),
            ("offset", DeadLetterHeaders.OFFSET),
            ("timestamp", DeadLetterHeaders.TIMESTAMP),
        ):
            origin.append((ORIGIN_PREFIX + name, header(headers, source) or b"-1"))
        if key is not None:
            origin.append((ORIGIN_PREFIX + "key", key))
    return [
        *kept,
        *origin,
        (DeadLetterHeaders.REPLAY_COUNT, str(replay_count(headers) + 1).encode()),
        (REPLAY_TARGET, target.encode()),
    ]


def replay_through(
    registry: Mapping[tuple[str, str], Stage], message: InboundMessage
) -> list[OutboundRecord]:
    """Run a message from the retry topic through the stage its `REPLAY_TARGET` names.

    Returns that stage's outputs, or its dead letter (named after that stage, replay count
    kept) when it fails again. A message whose target is missing or names no registered stage
    is dead-lettered as the retry stage's own (`REPLAY_PIPELINE`/`REPLAY_STAGE`), its target
    header kept. Nothing here raises except a `FatalError` from the target stage, which stops
    the worker as it would in that stage: a replay that fails, however often, never counts
    towards a dead-letter breaker.
    """
    target_error: ValidationError | None = None
    pipeline: Stage | None = None
    raw = header(message.headers, REPLAY_TARGET)
    if raw is None:
        target_error = ValidationError(f"a replayed message needs a {REPLAY_TARGET} header")
    else:
        try:
            target = ReplayTarget.parse(raw)
        except ValueError as exc:
            target_error = ValidationError(str(exc))
        else:
            pipeline = registry.get((target.pipeline, target.stage))
            if pipeline is None or target.pipeline == REPLAY_PIPELINE:
                known = ", ".join(sorted(f"{p}/{s}" for p, s in registry if p != REPLAY_PIPELINE))
                target_error = ValidationError(
                    f"no stage {target} to replay through (replayable: {known or 'none'})"
                )
    if target_error is not None or pipeline is None:
        return _unreplayable(registry, message, target_error or ValidationError("no target"))

    stripped = InboundMessage(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=message.timestamp_ms,
        key=message.key,
        value=message.value,
        headers=[(k, v) for k, v in message.headers if k != REPLAY_TARGET],
    )
    stats = pipeline.stats
    stats.consumed += 1
    outputs, error = pipeline.apply(stripped)
    stats.produced += len(outputs)
    if error is not None:
        return [*outputs, *_failed_again(pipeline, stripped, error)]
    topic, partition, offset, _ = stripped.origin()
    log.info(
        "replayed %s[%d]@%d through %s/%s (replay %d)",
        topic,
        partition,
        offset,
        pipeline.name,
        pipeline.stage,
        replay_count(stripped.headers),
    )
    return list(outputs)


def _unreplayable(
    registry: Mapping[tuple[str, str], Stage], message: InboundMessage, error: ValidationError
) -> list[OutboundRecord]:
    own = registry.get((REPLAY_PIPELINE, REPLAY_STAGE))
    if own is None:  # not wired as a pipeline of its own: let the caller route the failure
        raise error
    return _failed_again(own, message, error)


def _failed_again(
    pipeline: Stage, message: InboundMessage, error: WorkerError
) -> list[OutboundRecord]:
    """Route a replay's failure as its stage would, without counting it in the breaker."""
    return pipeline.route_failure(message, error, count_in_breaker=False)


def replay_handler(
    registry: Mapping[tuple[str, str], Stage],
) -> Callable[[InboundMessage], list[OutboundRecord]]:
    """The retry topic's handler: `replay_through` the stages in `registry` (the worker's)."""

    def handle(message: InboundMessage) -> list[OutboundRecord]:
        return replay_through(registry, message)

    return handle
