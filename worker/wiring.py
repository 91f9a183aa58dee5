"""Builds `Pipeline`s for the agents: the dead-letter topic, the breaker, the secrets to mask."""

from __future__ import annotations

from pydantic import SecretStr

from worker.app import app, settings, topic_names
from worker.pipeline import DeadLetterBreaker, Handler, Pipeline
from worker.streaming import FaustSender

__all__ = ["KIND_HEADER", "PIPELINES", "build_pipeline", "secret_values"]

#: On internal topics, says what a record is (`email-event`, `identity`, ...).
KIND_HEADER = "__autopilot.kind"

#: Every replayable pipeline stage built so far, by (name, stage): `worker.replay` runs a
#: replayed dead letter through the handler of the stage that dead-lettered it.
PIPELINES: dict[tuple[str, str], Pipeline] = {}

_sender = FaustSender(app)

#: One dead-letter breaker per pipeline, shared by its stages.
_BREAKERS: dict[str, DeadLetterBreaker] = {}


def secret_values() -> tuple[str, ...]:
    """Every secret value the process knows (the API key, each write key, the webhook token),
    so dead letters and logs can be masked of them."""
    values: list[str] = []
    for name, value in settings:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            values.append(secret)
            if name == "segment_write_keys":
                values.extend(key.strip() for key in secret.split(","))
    return tuple(v for v in values if v)


def build_pipeline(
    name: str,
    stage: str,
    handler: Handler,
    *,
    forward_topic: str | None = None,
    replayable: bool = True,
) -> Pipeline:
    """The stage `stage` of pipeline `name`, registered in `PIPELINES` when `replayable`.

    The stages of one pipeline share its dead-letter breaker, which counts each message where
    it ends (an intake that forwards a message on `forward_topic` leaves it to the next stage):
    a stage that sees only part of the traffic, such as a map stage that gets just the inputs
    its intake could not map in place, cannot trip it on a skewed sample.

    A stage whose work is not its `handler` (delivery, whose handler is a placeholder) must say
    `replayable=False`, or a replay aimed at it would run the placeholder and do nothing.
    """
    if (name, stage) in PIPELINES:
        raise ValueError(f"pipeline {name}/{stage} is built twice")
    if name not in _BREAKERS:
        _BREAKERS[name] = DeadLetterBreaker(
            window=settings.dlq_breaker_window,
            min_messages=settings.dlq_breaker_min_messages,
            max_ratio=settings.dlq_breaker_max_ratio,
        )
    pipeline = Pipeline(
        name=name,
        stage=stage,
        handler=handler,
        sender=_sender,
        dead_letter_topic=topic_names.dead_letters,
        breaker=_BREAKERS[name],
        secrets=secret_values(),
        forward_topic=forward_topic,
    )
    if replayable:
        PIPELINES[name, stage] = pipeline
    return pipeline
