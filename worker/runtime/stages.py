"""`Runtime`: what features are built on (the app, settings, topic names, placement, the
producer) and how they build their stages: one breaker per pipeline, the dead-letter topic, the
secrets to mask, and the registry replay looks stages up in.

One `Runtime` per process, made by the composition root; features receive it, never import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faust

from worker.pipeline.breaker import Breaker
from worker.pipeline.stage import Handler, Stage
from worker.runtime.app import create_app
from worker.runtime.batches import FaustSender
from worker.runtime.faust_overrides import RawSchema, WorkerApp
from worker.runtime.placement import Placement
from worker.settings import Settings, secret_values
from worker.topics import TopicNames

__all__ = ["Runtime"]


@dataclass
class Runtime:
    """The faust app and what every feature needs from it."""

    app: WorkerApp
    settings: Settings
    topics: TopicNames
    placement: Placement
    sender: FaustSender
    #: every replayable stage built so far, by (pipeline, stage): replay runs a replayed dead
    #: letter through the handler of the stage that dead-lettered it
    stages: dict[tuple[str, str], Stage] = field(default_factory=dict)
    #: one breaker per pipeline, shared by its stages (`/readyz` and the resume endpoint)
    breakers: dict[str, Breaker] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        app = create_app(settings)
        # partition counts as the consumer saw them at the last rebalance; a lambda, since
        # reading `app.consumer` now would create the consumer before its time
        placement = Placement(
            lambda topic: app.consumer.topic_partitions(topic),  # noqa: PLW0108
            # active here: a table's changelog partitions held as standbys are not
            held_of=lambda topic: {
                tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic
            },
        )

        # faust's signals call receivers with (sender, *arguments, signal=..., **keywords)
        def forget_counts(_app: Any, *_args: Any, **_: Any) -> None:
            placement.forget()

        # mode's handler type rejects even a receiver of exactly its signature
        app.on_partitions_revoked.connect(forget_counts)  # type: ignore[arg-type]
        app.on_partitions_assigned.connect(forget_counts)  # type: ignore[arg-type]
        return cls(
            app=app,
            settings=settings,
            topics=TopicNames.from_settings(settings),
            placement=placement,
            sender=FaustSender(app),
        )

    def raw_topic(self, *names: str) -> faust.TopicT:
        """Topics read and written as raw bytes: decoding is ours, so failures can be routed."""
        return self.app.topic(
            *names,
            schema=RawSchema(
                key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
            ),
            partitions=self.settings.topic_partitions,
        )

    def build_stage(
        self,
        name: str,
        stage: str,
        handler: Handler,
        *,
        forward_topic: str | None = None,
        replayable: bool = True,
    ) -> Stage:
        """The stage `stage` of pipeline `name`, registered for replay when `replayable`.

        The stages of one pipeline share its breaker, which counts each message where it ends
        (an intake that forwards a message on `forward_topic` leaves it to the next stage): a
        stage that sees only part of the traffic cannot trip it on a skewed sample. A stage
        whose work is not its `handler` (delivery's placeholder) must say `replayable=False`.
        """
        if (name, stage) in self.stages:
            raise ValueError(f"stage {name}/{stage} is built twice")
        settings = self.settings
        breaker = self.breakers.get(name)
        if breaker is None:
            breaker = self.breakers[name] = Breaker(
                window=settings.dlq_breaker_window,
                min_messages=settings.dlq_breaker_min_messages,
                max_ratio=settings.dlq_breaker_max_ratio,
                pipeline=name,
            )
        built = Stage(
            name=name,
            stage=stage,
            handler=handler,
            sender=self.sender,
            dead_letter_topic=self.topics.dead_letters,
            breaker=breaker,
            secrets=secret_values(settings),
            forward_topic=forward_topic,
        )
        if replayable:
            self.stages[name, stage] = built
        return built
