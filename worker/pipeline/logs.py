"""Logging: one JSON object per line, secrets masked.

Context travels as structured fields (logging's `extra=`), listed in `EXTRA_FIELDS`; a record
about one message gets them from `log_fields`. Every secret the process knows is masked in the
message, the traceback and every extra field alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from worker.pipeline.records import InboundMessage
from worker.settings import mask

__all__ = [
    "EXTRA_FIELDS",
    "JsonFormatter",
    "KafkaClientLines",
    "StartupNoise",
    "json_formatter",
    "log_fields",
    "logging_config",
    "message_id_in",
    "message_id_of",
]

#: The structured fields a log line may carry besides time, level, logger and message.
EXTRA_FIELDS = (
    "pipeline",
    "stage",
    "topic",
    "partition",
    "offset",
    "message_id",
    "error_class",
    "outcome",
    "status",
)

#: Inputs larger than this are not parsed for their id (a log line is not worth the work).
_MAX_ID_SCAN_BYTES = 64 * 1024
_ID_FIELDS = ("messageId", "message_id", "id")


def message_id_of(value: bytes) -> str | None:
    """The id a JSON input names (Segment `messageId`, descriptor `message_id`, event `id`).

    Best effort, for logs only: None for anything that is not a JSON object with such a string.
    """
    if len(value) > _MAX_ID_SCAN_BYTES:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return message_id_in(data)


def message_id_in(data: object) -> str | None:
    """`message_id_of` for an input already parsed: the id it names, if it is an object."""
    if not isinstance(data, dict):
        return None
    for name in _ID_FIELDS:
        found = data.get(name)
        if isinstance(found, str) and found:
            return found[:200]
    return None


def log_fields(
    pipeline: str,
    stage: str,
    message: InboundMessage,
    *,
    message_id: str | None = None,
    **more: str | int | None,
) -> dict[str, Any]:
    """`extra=` for a log record about `message`: where it was first written and its id.

    topic, partition and offset name the input a producer wrote (our internal re-keying
    topics are looked through), as the dead-letter headers do.
    """
    topic, partition, offset, _ = message.origin()
    fields: dict[str, Any] = {
        "pipeline": pipeline,
        "stage": stage,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "message_id": message_id if message_id is not None else message_id_of(message.value),
    }
    fields.update({k: v for k, v in more.items() if v is not None})
    return fields


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, message and our context fields."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self._mask(message),
        }
        for name in EXTRA_FIELDS:
            value = record.__dict__.get(name)
            if value is None:
                continue
            if not isinstance(value, bool | int | float):
                value = self._mask(str(value))
            entry[name] = value
        return orjson.dumps(entry).decode()

    def _mask(self, text: str) -> str:
        return mask(text, self._secrets)


#: Loggers of the Kafka clients (aiokafka, and faust's transport on top of it).
KAFKA_CLIENT_LOGGERS = ("aiokafka", "kafka", "faust.transport")

#: While Kafka is unreachable its clients log a line per failed attempt (about 100 a second);
#: this many seconds pass between two of their warning or error lines.
KAFKA_CLIENT_LINE_EVERY_S = 10.0


class KafkaClientLines(logging.Filter):
    """Lets one Kafka client warning or error through every `every_s` seconds; the next line let
    through says how many were held back since the last. Other lines pass untouched.

    A broker that is down must not flood the logs; `/readyz` says why the worker is not ready.
    """

    def __init__(
        self,
        every_s: float = KAFKA_CLIENT_LINE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._every_s = every_s
        self._clock = clock
        self._last = -float("inf")
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith(KAFKA_CLIENT_LOGGERS):
            return True
        now = self._clock()
        if now - self._last < self._every_s:
            self._held += 1
            return False
        if self._held:
            record.msg = (
                f"{record.getMessage()} ({self._held} more Kafka client warnings and errors in "
                f"the last {now - self._last:.0f} s not logged)"
            )
            record.args = ()
        self._last, self._held = now, 0
        return True


#: The logger whose coordinator look-ups fail, harmlessly, while a fresh broker is still creating
#: its group coordinator (the `__consumer_offsets` topic): aiokafka logs them at error level and
#: retries every 100 ms.
GROUP_COORDINATOR_LOGGER = "aiokafka.consumer.group_coordinator"
_STARTUP_NOISE = ("GroupCoordinatorNotAvailableError", "CoordinatorLoadInProgressError")
#: What follows on a fresh broker: the first join finds the coordinator not ready yet, and the
#: client marks it dead (a warning) and looks it up again.
_STARTUP_FOLLOWERS = ("Marking the coordinator dead",)

#: How long after the first of those lines they count as start-up noise.
STARTUP_NOISE_GRACE_S = 60.0


class StartupNoise(logging.Filter):
    """Demotes aiokafka's "Group Coordinator Request failed: GroupCoordinatorNotAvailableError"
    (and the coordinator's load in progress) to one `info` line while a fresh broker sets up its
    group coordinator: harmless, retried at once, but alarming at error level on a first start.

    The first such line becomes `info`, saying so; the repeats within `grace_s` of it are dropped,
    and the "Marking the coordinator dead" warnings that follow then are `info` too. Later ones,
    which mean the coordinator stays unavailable, pass at their own level (and
    `KafkaClientLines` limits them); a broker that was not fresh logs no such first line, so its
    coordinator's deaths stay warnings. Attached to the group coordinator's logger, so it runs
    before the handler's filters.
    """

    def __init__(
        self,
        grace_s: float = STARTUP_NOISE_GRACE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._grace_s = grace_s
        self._clock = clock
        self._first: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        now = self._clock()
        within = self._first is not None and now - self._first < self._grace_s
        if any(noise in message for noise in _STARTUP_FOLLOWERS):
            return (
                self._demoted(record, f"{message} (the new broker's coordinator)")
                if within
                else True
            )
        if not any(noise in message for noise in _STARTUP_NOISE):
            return True
        if self._first is not None:
            return not within  # a repeat within the grace is dropped; after it, it passes as is
        self._first = now
        return self._demoted(
            record,
            f"{message}: usual while a new broker sets up its group coordinator; retrying "
            f"(repeats in the next {self._grace_s:.0f} s not logged)",
        )

    @staticmethod
    def _demoted(record: logging.LogRecord, message: str) -> bool:
        record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        record.msg, record.args = message, ()
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)


def json_formatter() -> JsonFormatter:
    """The formatter with every secret of the settings to mask (a logging.config factory)."""
    from worker.settings import get_settings, secret_values  # noqa: PLC0415  (read lazily)

    return JsonFormatter(secret_values(get_settings()))


def logging_config(level: str = "info") -> dict[str, Any]:
    """A `logging.config.dictConfig` routing every logger (faust's too) to stderr as JSON."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "worker.pipeline.logs.json_formatter"}},
        "filters": {
            "kafka_client_lines": {"()": "worker.pipeline.logs.KafkaClientLines"},
            "startup_noise": {"()": "worker.pipeline.logs.StartupNoise"},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["kafka_client_lines"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {GROUP_COORDINATOR_LOGGER: {"filters": ["startup_noise"]}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }
