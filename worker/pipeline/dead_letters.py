"""The one place that builds dead letters.

A dead letter keeps the original key, value and headers byte for byte and adds the headers
below (modelled on Kafka Connect's `__connect.errors.*`). The README's dead-letter table
documents them; `python -m worker dlq` reads them back.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime

from worker import __version__
from worker.errors import DeliveryRejected, WorkerError
from worker.pipeline.records import InboundMessage, OutboundRecord, header
from worker.settings import mask

__all__ = ["DLQ_PREFIX", "DeadLetterHeaders", "dead_letter"]

DLQ_PREFIX = "__autopilot.errors."


class DeadLetterHeaders:
    """Header names, one constant each."""

    TOPIC = DLQ_PREFIX + "topic"
    PARTITION = DLQ_PREFIX + "partition"
    OFFSET = DLQ_PREFIX + "offset"
    TIMESTAMP = DLQ_PREFIX + "timestamp"
    PIPELINE = DLQ_PREFIX + "pipeline"
    STAGE = DLQ_PREFIX + "stage"
    CLASS_NAME = DLQ_PREFIX + "class.name"
    MESSAGE = DLQ_PREFIX + "exception.message"
    STATUS = DLQ_PREFIX + "status"
    WORKER_VERSION = DLQ_PREFIX + "worker.version"
    FIRST_FAILURE = DLQ_PREFIX + "first.failure.time"
    FAILED_AT = DLQ_PREFIX + "failure.time"
    ATTEMPTS = DLQ_PREFIX + "attempts"
    RESPONSE_BODY = DLQ_PREFIX + "response.body"
    REPLAY_COUNT = DLQ_PREFIX + "replay.count"


MAX_MESSAGE_CHARS = 2000


def dead_letter(
    message: InboundMessage,
    error: WorkerError,
    *,
    topic: str,
    pipeline: str,
    stage: str,
    secrets: Iterable[str] = (),
    attempts: str | None = None,
) -> OutboundRecord:
    """The dead letter for `message`, which failed with `error` in `stage` of `pipeline`."""
    origin_topic, partition, offset, timestamp_ms = message.origin()
    now = _clock.now()
    kept = [(k, v) for k, v in message.producer_headers() if not k.startswith(DLQ_PREFIX)]
    first_failure = header(message.headers, DeadLetterHeaders.FIRST_FAILURE) or now.encode()
    replay_count = header(message.headers, DeadLetterHeaders.REPLAY_COUNT)
    text = mask(error.message, secrets)[:MAX_MESSAGE_CHARS]
    headers = [
        *kept,
        (DeadLetterHeaders.TOPIC, origin_topic.encode()),
        (DeadLetterHeaders.PARTITION, str(partition).encode()),
        (DeadLetterHeaders.OFFSET, str(offset).encode()),
        (DeadLetterHeaders.TIMESTAMP, str(timestamp_ms).encode()),
        (DeadLetterHeaders.PIPELINE, pipeline.encode()),
        (DeadLetterHeaders.STAGE, stage.encode()),
        (DeadLetterHeaders.CLASS_NAME, type(error).__name__.encode()),
        (DeadLetterHeaders.MESSAGE, text.encode()),
        (DeadLetterHeaders.STATUS, str(error.status).encode()),
        (DeadLetterHeaders.WORKER_VERSION, __version__.encode()),
        (DeadLetterHeaders.FIRST_FAILURE, first_failure),
        (DeadLetterHeaders.FAILED_AT, now.encode()),
    ]
    if attempts is not None:
        headers.append((DeadLetterHeaders.ATTEMPTS, mask(attempts, secrets).encode()))
    if isinstance(error, DeliveryRejected) and error.body:
        body = mask(error.body, secrets)[:MAX_MESSAGE_CHARS]
        headers.append((DeadLetterHeaders.RESPONSE_BODY, body.encode()))
    if replay_count is not None:
        headers.append((DeadLetterHeaders.REPLAY_COUNT, replay_count))
    return OutboundRecord(
        topic=topic, key=message.origin_key(), value=message.value, headers=headers
    )


class _FailureClock:
    """Now as the failure-time headers write it: ISO 8601 in UTC, to the millisecond; made once
    a millisecond (a burst of bad input dead-letters dozens of messages in one)."""

    __slots__ = ("_millis", "_text")

    def __init__(self) -> None:
        self._millis = -1
        self._text = ""

    def now(self) -> str:
        millis = time.time_ns() // 1_000_000
        if millis != self._millis:
            seconds, rest = divmod(millis, 1000)
            moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest * 1000)
            self._text = moment.isoformat(timespec="milliseconds")
            self._millis = millis
        return self._text


_clock = _FailureClock()
