"""The worker's closed error family: every failure is one of these, and each class has one fate.

Mapping code raises these; the per-message loop (`worker.pipeline.stage`) and the delivery agent
decide where the message goes by reading `fate`, never by matching on messages. Anything else
that escapes a mapping is wrapped as `UnexpectedError` so that nothing is ever lost.

    WorkerError                      (abstract)
    ├── SkipMessage                  fate SKIP:         ack, count by reason, emit nothing
    ├── InvalidInput                 fate DEAD_LETTER:  status 400, never retried
    │   ├── DecodeError                 bytes are not UTF-8 JSON, or not a JSON object
    │   ├── ValidationError             a field is missing or has the wrong type or value
    │   ├── UnsupportedType             the message's type/event type is not one we know
    │   └── MessageTooLarge             over the size limit (Segment's 32 KB)
    ├── UnexpectedError              fate DEAD_LETTER:  status 500, a bug in our code, kept
    ├── DeliveryRejected             fate DEAD_LETTER:  the API refused it for good (4xx, 501)
    ├── RetryableDeliveryError       fate RETRY:        408, 423, 429, 5xx, network; then DLQ
    │   └── RetryBudgetExhausted        fate DEAD_LETTER: retried past the budget
    ├── AuthenticationFailed         fate PAUSE:        401/403 for the key; pause and probe
    ├── PipelinePaused               fate PAUSE:        our own code failed for most recent
    │                                                   messages: the pipeline waits for an operator
    ├── BatchGivenBack               fate GIVE_BACK:    rebalance or shutdown: unacked, reread
    └── FatalError                   fate STOP:         the worker must stop, nothing is acked
        └── ConfigurationError          settings make the worker unable to run

Bad data is never fatal: however concentrated, it is dead-lettered and the stream moves on.

Messages never contain secrets: the API key and write keys are `SecretStr` and are never
formatted into an error.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

__all__ = [
    "AuthenticationFailed",
    "BatchGivenBack",
    "ConfigurationError",
    "DecodeError",
    "DeliveryRejected",
    "FatalError",
    "Fate",
    "InvalidInput",
    "MessageTooLarge",
    "PipelinePaused",
    "RetryBudgetExhausted",
    "RetryableDeliveryError",
    "SkipMessage",
    "UnexpectedError",
    "UnsupportedType",
    "ValidationError",
    "WorkerError",
]


class Fate(StrEnum):
    """What happens to a message whose handling raised a given error."""

    SKIP = "skip"
    DEAD_LETTER = "dead-letter"
    RETRY = "retry"
    PAUSE = "pause"
    GIVE_BACK = "give-back"
    STOP = "stop"


class WorkerError(Exception):
    """Base of the family. `status` is the HTTP-style status written to dead-letter headers."""

    fate: ClassVar[Fate]
    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class SkipMessage(WorkerError):
    """Not an error of the input: the message is acknowledged and counted, nothing is emitted.

    `reason` is a short, stable label used as a metric label and in `map` output.
    """

    fate = Fate.SKIP
    status = 200

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidInput(WorkerError):
    """The input can never be processed as it is (400). Dead-lettered with its original bytes."""

    fate = Fate.DEAD_LETTER
    status = 400


class DecodeError(InvalidInput):
    """The bytes are not UTF-8 JSON, or the JSON is not an object."""


class ValidationError(InvalidInput):
    """A field is missing or invalid; the message names the field."""


class UnsupportedType(InvalidInput):
    """The message's type (or Autopilot event type) is not one this worker knows."""


class MessageTooLarge(InvalidInput):
    """The message is larger than the limit the upstream contract allows."""


class UnexpectedError(WorkerError):
    """An exception our code did not foresee. Kept as a dead letter so nothing is lost."""

    fate = Fate.DEAD_LETTER
    status = 500


class DeliveryRejected(WorkerError):
    """The destination API refused the request for good (4xx other than 401/403/408/423/429,
    501), or refused one item of it inside a 2xx answer."""

    fate = Fate.DEAD_LETTER

    def __init__(self, message: str, *, http_status: int, body: str = "") -> None:
        super().__init__(message)
        self.status = http_status
        self.body = body


class RetryableDeliveryError(WorkerError):
    """A transient failure: retried with backoff within the retry budget, then dead-lettered.

    `retry_after` is the server's hint in seconds (Retry-After or `try-in-seconds`), if any.
    """

    fate = Fate.RETRY
    status = 503

    def __init__(
        self, message: str, *, http_status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        if http_status is not None:
            self.status = http_status
        self.retry_after = retry_after


class RetryBudgetExhausted(RetryableDeliveryError):
    """Retried past the budget; dead-lettered with the attempt history."""

    fate = Fate.DEAD_LETTER


class AuthenticationFailed(WorkerError):
    """The API key was refused (401/403). Not a per-message problem: delivery pauses and probes."""

    fate = Fate.PAUSE
    status = 401


class PipelinePaused(WorkerError):
    """Most recent messages of a pipeline failed in our own code (`UnexpectedError`): a bad
    deploy, not bad data. The pipeline stops taking messages (its dead letters stay replayable;
    other pipelines and the ingest run on) until an operator resumes it or a new deploy starts."""

    fate = Fate.PAUSE
    status = 503


class BatchGivenBack(WorkerError):
    """A rebalance or a shutdown began and the delivery batch in hand did not finish in time
    (`AUTOPILOT_GIVE_BACK_AFTER_S`): its events are forgotten unacked, so the group does not wait
    on them and the commit stays before them; the partition's next owner delivers them again."""

    fate = Fate.GIVE_BACK
    status = 503


class FatalError(WorkerError):
    """The worker stops; the message in hand is not acknowledged, so it is read again later."""

    fate = Fate.STOP


class ConfigurationError(FatalError):
    """The settings make the worker unable to run."""
