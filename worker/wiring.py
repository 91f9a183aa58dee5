"""Builds `Pipeline`s for the agents: the dead-letter topic, the breaker, the secrets to mask."""

from __future__ import annotations

from worker.app import app, settings, topic_names
from worker.pipeline import Breaker, Handler, Pipeline
from worker.settings import secret_values
from worker.streaming import FaustSender

__all__ = ["BREAKERS", "KIND_HEADER", "PIPELINES", "build_pipeline"]

#: On internal topics, says what a record is (`email-event`, `identity`, ...).
KIND_HEADER = "__autopilot.kind"

#: Every replayable pipeline stage built so far, by (name, stage): `worker.replay` runs a
#: replayed dead letter through the handler of the stage that dead-lettered it.
PIPELINES: dict[tuple[str, str], Pipeline] = {}

_sender = FaustSender(app)

#: One breaker per pipeline, shared by its stages (`/readyz` and the resume endpoint read it).
BREAKERS: dict[str, Breaker] = {}


def build_pipeline(
    name: str,
    stage: str,
    handler: Handler,
    *,
    forward_topic: str | None = None,
    replayable: bool = True,
) -> Pipeline:
    """The stage `stage` of pipeline `name`, registered in `PIPELINES` when `replayable`.

    The stages of one pipeline share its breaker, which counts each message where
    it ends (an intake that forwards a message on `forward_topic` leaves it to the next stage):
    a stage that sees only part of the traffic, such as a map stage that gets just the inputs
    its intake could not map in place, cannot trip it on a skewed sample.

    A stage whose work is not its `handler` (delivery, whose handler is a placeholder) must say
    `replayable=False`, or a replay aimed at it would run the placeholder and do nothing.
    """
    if (name, stage) in PIPELINES:
        raise ValueError(f"pipeline {name}/{stage} is built twice")
    if name not in BREAKERS:
        BREAKERS[name] = Breaker(
            window=settings.dlq_breaker_window,
            min_messages=settings.dlq_breaker_min_messages,
            max_ratio=settings.dlq_breaker_max_ratio,
            pipeline=name,
        )
    pipeline = Pipeline(
        name=name,
        stage=stage,
        handler=handler,
        sender=_sender,
        dead_letter_topic=topic_names.dead_letters,
        breaker=BREAKERS[name],
        secrets=secret_values(settings),
        forward_topic=forward_topic,
    )
    if replayable:
        PIPELINES[name, stage] = pipeline
    return pipeline
