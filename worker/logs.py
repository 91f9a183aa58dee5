"""Logging: one JSON object per line, secrets masked."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["JsonFormatter", "json_formatter", "logging_config"]

_EXTRA_FIELDS = ("pipeline", "stage", "topic", "partition", "offset", "message_id")


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, message and our context fields."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        for secret in self._secrets:
            message = message.replace(secret, "**********")
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        for name in _EXTRA_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        return orjson.dumps(entry).decode()


def json_formatter() -> JsonFormatter:
    """The formatter with every secret of the settings to mask (a logging.config factory)."""
    from worker.wiring import secret_values  # noqa: PLC0415  (settings are read lazily)

    return JsonFormatter(secret_values())


def logging_config(level: str = "info") -> dict[str, Any]:
    """A `logging.config.dictConfig` routing every logger (faust's too) to stderr as JSON."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "worker.logs.json_formatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }
