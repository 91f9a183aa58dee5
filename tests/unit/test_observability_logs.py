"""JSON log lines: context as fields, and no secret in the message, traceback or any field."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from worker.errors import SkipMessage, ValidationError
from worker.pipeline.breaker import Breaker
from worker.pipeline.logs import (
    GROUP_COORDINATOR_LOGGER,
    JsonFormatter,
    StartupNoise,
    log_fields,
    logging_config,
    message_id_of,
)
from worker.pipeline.records import ORIGIN_PREFIX, InboundMessage, OutboundRecord
from worker.pipeline.stage import Stage

SECRETS = ("sk-live-123456", "write-key-abc", "write-key-abc,write-key-def")


def record(message: str, *args: object, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("worker.test", logging.WARNING, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    return rec


def formatted(rec: logging.LogRecord) -> dict[str, Any]:
    line = JsonFormatter(SECRETS).format(rec)
    assert "\n" not in line
    parsed: dict[str, Any] = orjson.loads(line)
    return parsed


def test_context_fields_are_structured_and_typed() -> None:
    got = formatted(
        record(
            "dead-lettered %s",
            "x",
            pipeline="source",
            stage="intake",
            topic="autopilot.email-events",
            partition=2,
            offset=41,
            message_id="evt_1",
            error_class="ValidationError",
            unrelated="not exported",
        )
    )
    assert got["message"] == "dead-lettered x"
    assert got["level"] == "warning"
    assert got["logger"] == "worker.test"
    assert (got["pipeline"], got["stage"], got["topic"]) == (
        "source",
        "intake",
        "autopilot.email-events",
    )
    assert (got["partition"], got["offset"]) == (2, 41)
    assert got["message_id"] == "evt_1"
    assert got["error_class"] == "ValidationError"
    assert "unrelated" not in got


def test_secrets_are_masked_in_message_extras_and_traceback() -> None:
    error = RuntimeError("refused key sk-live-123456")
    rec = record(
        "calling with %s",
        "sk-live-123456",
        message_id="id-sk-live-123456",
        topic="write-key-abc,write-key-def",
        status="401 write-key-abc",
    )
    rec.exc_info = (RuntimeError, error, None)
    line = JsonFormatter(SECRETS).format(rec)
    for secret in ("sk-live-123456", "write-key-abc", "write-key-def"):
        assert secret not in line
    got = orjson.loads(line)
    assert got["message"].startswith("calling with **********")
    assert "RuntimeError: refused key **********" in got["message"]
    assert got["message_id"] == "id-**********"
    assert got["topic"] == "**********"  # the longer secret masked whole
    assert got["status"] == "401 **********"


def test_log_fields_name_the_original_input_and_its_id() -> None:
    internal = InboundMessage(
        "app.source-by-email",
        1,
        5,
        0,
        b"k",
        b'{"id": "evt_9", "type": "email_opened"}',
        headers=[
            (ORIGIN_PREFIX + "topic", b"autopilot.email-events"),
            (ORIGIN_PREFIX + "partition", b"2"),
            (ORIGIN_PREFIX + "offset", b"77"),
            (ORIGIN_PREFIX + "timestamp", b"1700000000000"),
        ],
    )
    fields = log_fields("source", "map", internal, error_class="DecodeError", status=None)
    assert fields == {
        "pipeline": "source",
        "stage": "map",
        "topic": "autopilot.email-events",
        "partition": 2,
        "offset": 77,
        "message_id": "evt_9",
        "error_class": "DecodeError",
    }
    direct = InboundMessage("segment.calls", 0, 3, 0, None, b"{}")
    assert log_fields("d", "intake", direct, message_id="m-1")["message_id"] == "m-1"
    assert log_fields("d", "intake", direct)["topic"] == "segment.calls"


def test_message_id_of_is_best_effort() -> None:
    assert message_id_of(b'{"messageId": "m-1", "id": "x"}') == "m-1"
    assert message_id_of(b'{"message_id": "d-1"}') == "d-1"
    assert message_id_of(b'{"id": "evt_1"}') == "evt_1"
    assert message_id_of(b'{"id": 12}') is None
    assert message_id_of(b"{not json") is None
    assert message_id_of(b"[1, 2]") is None
    assert message_id_of(b"\xff\xfe") is None
    assert message_id_of(b'{"id": "' + b"x" * 70_000 + b'"}') is None


def test_the_dead_letter_warning_carries_the_fields(caplog: Any) -> None:
    def reject(message: InboundMessage) -> list[OutboundRecord]:
        raise ValidationError("contact.email: field required")

    class Sink:
        async def send(self, records: Any) -> Any:
            raise AssertionError("route does not send")

    breaker = Breaker(window=10, min_messages=10, max_ratio=0.5)
    p = Stage("source", "intake", reject, Sink(), "dlq", breaker)
    bad = InboundMessage("autopilot.email-events", 1, 12, 0, None, b'{"id": "evt_7"}')
    with caplog.at_level(logging.WARNING, logger="worker.pipeline.stage"):
        p.route([bad])
    (warning,) = [r for r in caplog.records if r.name == "worker.pipeline.stage"]
    got = formatted(warning)
    assert got["message"].startswith("dead-lettered autopilot.email-events[1]@12")
    assert {k: got[k] for k in ("pipeline", "stage", "topic", "partition", "offset")} == {
        "pipeline": "source",
        "stage": "intake",
        "topic": "autopilot.email-events",
        "partition": 1,
        "offset": 12,
    }
    assert got["message_id"] == "evt_7"
    assert got["error_class"] == "ValidationError"


class _NoSend:
    async def send(self, records: Any) -> Any:
        raise AssertionError("route does not send")


# --- start-up noise ---------------------------------------------------------------------------


def _coordinator_error() -> logging.LogRecord:
    return logging.LogRecord(
        GROUP_COORDINATOR_LOGGER,
        logging.ERROR,
        __file__,
        1,
        "Group Coordinator Request failed: %s",
        ("[Error 15] GroupCoordinatorNotAvailableError",),
        None,
    )


def test_a_fresh_brokers_coordinator_error_is_one_info_line_then_errors_again(
    caplog: Any,
) -> None:
    caplog.set_level(logging.INFO, logger=GROUP_COORDINATOR_LOGGER)
    now = [100.0]
    noise = StartupNoise(grace_s=60, clock=lambda: now[0])
    first = _coordinator_error()
    assert noise.filter(first)
    assert (first.levelno, first.levelname) == (logging.INFO, "INFO")
    assert "GroupCoordinatorNotAvailableError: usual while a new broker" in first.getMessage()
    now[0] = 130.0
    assert not noise.filter(_coordinator_error())  # a repeat within the grace: not logged
    now[0] = 161.0
    late = _coordinator_error()
    assert noise.filter(late)  # still unavailable a minute on: an error again
    assert late.levelno == logging.ERROR


def _coordinator_dead() -> logging.LogRecord:
    return logging.LogRecord(
        GROUP_COORDINATOR_LOGGER,
        logging.WARNING,
        __file__,
        1,
        "Marking the coordinator dead (node %s)for group %s.",
        (1, "autopilot-worker"),
        None,
    )


def test_the_coordinators_death_right_after_is_info_and_a_warning_otherwise(
    caplog: Any,
) -> None:
    caplog.set_level(logging.INFO, logger=GROUP_COORDINATOR_LOGGER)
    now = [100.0]
    noise = StartupNoise(grace_s=60, clock=lambda: now[0])
    before = _coordinator_dead()
    assert noise.filter(before)
    assert before.levelno == logging.WARNING  # no fresh broker seen: a warning
    assert noise.filter(_coordinator_error())
    now[0] = 101.0
    after = _coordinator_dead()
    assert noise.filter(after)
    assert after.levelno == logging.INFO
    assert after.getMessage().endswith("(the new broker's coordinator)")
    now[0] = 200.0
    late = _coordinator_dead()
    assert noise.filter(late)
    assert late.levelno == logging.WARNING


def test_the_demoted_line_is_dropped_when_info_is_not_logged(caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger=GROUP_COORDINATOR_LOGGER)
    assert not StartupNoise().filter(_coordinator_error())


def test_other_coordinator_lines_pass_untouched() -> None:
    noise = StartupNoise()
    other = logging.LogRecord(
        GROUP_COORDINATOR_LOGGER, logging.ERROR, __file__, 1, "Heartbeat failed", (), None
    )
    assert noise.filter(other)
    assert other.levelno == logging.ERROR


def test_the_logging_config_puts_the_filter_on_the_coordinators_logger() -> None:
    config = logging_config("info")
    assert config["loggers"][GROUP_COORDINATOR_LOGGER]["filters"] == ["startup_noise"]


def test_the_first_skip_of_each_reason_is_logged_once(caplog: Any) -> None:
    def skip(message: InboundMessage) -> list[OutboundRecord]:
        raise SkipMessage("no_trigger_for_event" if message.offset < 5 else "test_delivery")

    breaker = Breaker(window=10, min_messages=10, max_ratio=0.5)
    stage = Stage("destination", "map", skip, _NoSend(), "dlq", breaker)
    internal = [(ORIGIN_PREFIX + "topic", b"segment.calls"), (ORIGIN_PREFIX + "partition", b"2")]
    internal.append((ORIGIN_PREFIX + "offset", b"40"))
    messages = [
        InboundMessage("app.destination-by-user", 0, n, 0, None, b"{}", internal)
        for n in range(1, 8)
    ]
    with caplog.at_level(logging.INFO, logger="worker.pipeline.stage"):
        stage.route(messages)
    lines = [r.getMessage() for r in caplog.records if r.name == "worker.pipeline.stage"]
    assert len(lines) == 2
    assert lines[0].startswith(
        "skipped segment.calls[2]@40 in destination/map: no_trigger_for_event (the first skip"
    )
    assert "test_delivery" in lines[1]
    assert stage.stats.skipped == {"no_trigger_for_event": 4, "test_delivery": 3}
