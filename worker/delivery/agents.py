"""Delivery, built by `build_delivery`: request descriptors -> the backend's API -> outcomes.

One delivery per backend, each with its own topics (`TopicNames.for_backend`: the requests it
reads, the results it writes, the internal topic its replayed dead letters come back on), its
own agent and pipeline (`delivery` for Autopilot, `delivery-ortto` for Ortto:
`worker.backends.seam.qualified`), rate limiter, pause and breaker.

It runs on the runtime's reusable sink (`worker.runtime.sink`): a batch's offsets are acked
only after every descriptor in it has a final outcome (delivered or dead-lettered) and those
outcomes are on Kafka. While the API refuses the key, `deliver` does not return, so consumption
pauses and nothing is acked, skipped or dead-lettered. When a rebalance or a shutdown begins,
the batch in hand gets the backend's give-back grace (`AUTOPILOT_GIVE_BACK_AFTER_S`,
`ORTTO_GIVE_BACK_AFTER_S`) to finish; then it is given back unacked, nothing of it written, and
the partition's next owner delivers it again (at least once). Without the backend's API key no
agent is registered (`worker.composition.setup_warnings` says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import faust
import orjson
import pydantic

from worker.backends.seam import Backend, qualified
from worker.delivery.service import Deliverer
from worker.delivery.share import shared_limiter
from worker.errors import DecodeError, DeliveryRejected, RetryBudgetExhausted, WorkerError
from worker.models.autopilot_request import RequestDescriptor
from worker.models.delivery_result import DeliveryResult
from worker.pipeline.records import InboundMessage, OutboundRecord
from worker.pipeline.stage import Stage
from worker.runtime.batches import run_batches
from worker.runtime.metrics import metrics
from worker.runtime.sink import BatchingSink, ItemOutcome
from worker.runtime.stages import Runtime

__all__ = ["MAX_BATCH", "DeliveryState", "DeliveryWriter", "build_delivery", "parse_descriptor"]

#: Up to this many descriptors are handed to one `deliver` call (a few bulk requests' worth).
MAX_BATCH = 500


@dataclass
class DeliveryState:
    """What /readyz, the metrics and the console read of one backend's delivery: whether it
    runs, to which API at what rate limit, and its live Deliverer."""

    enabled: bool
    name: str = "autopilot"
    display_name: str = "Autopilot"
    #: the delivery's pipeline and agent (`delivery`, `delivery-ortto`)
    pipeline: str = "delivery"
    rate_limit: float = 0.0
    deliverer: Deliverer | None = None

    @property
    def paused(self) -> bool:
        return self.deliverer is not None and self.deliverer.paused

    @property
    def paused_since(self) -> float | None:
        return self.deliverer.paused_since if self.deliverer is not None else None

    @property
    def rate_limit_waited_s(self) -> float:
        return self.deliverer.limiter.waited_s if self.deliverer is not None else 0.0

    @property
    def requests_sent(self) -> int:
        return self.deliverer.limiter.requests if self.deliverer is not None else 0


def parse_descriptor(raw: bytes) -> RequestDescriptor:
    """A descriptor from the requests topic; anything else is a 400 dead letter."""
    try:
        return RequestDescriptor.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise DecodeError(f"not a request descriptor: {where}: {first['msg']}") from None


def _final_error(result: DeliveryResult) -> WorkerError:
    message = result.error or "delivery failed"
    if result.error_class == RetryBudgetExhausted.__name__:
        status = result.status if isinstance(result.status, int) else None
        return RetryBudgetExhausted(message, http_status=status)
    status = result.status if isinstance(result.status, int) else 400
    return DeliveryRejected(message, http_status=status, body=result.response_body or "")


@dataclass
class DeliveryWriter:
    """The sink's writer: a batch of descriptors through the `Deliverer`; each final result
    becomes an outcome record on the deliveries topic, and a dead letter when it failed."""

    deliverer: Deliverer
    deliveries_topic: str

    async def write(self, items: Sequence[RequestDescriptor]) -> list[ItemOutcome]:
        return [self.settle(result) for result in await self.deliverer.deliver(items)]

    def settle(self, result: DeliveryResult) -> ItemOutcome:
        record = OutboundRecord(
            topic=self.deliveries_topic,
            key=result.contact.encode(),
            value=orjson.dumps(result.model_dump(mode="json")),
            headers=[],
        )
        if result.outcome != "dead_lettered":
            return ItemOutcome([record], detail=result)
        history = orjson.dumps([a.model_dump(mode="json") for a in result.history]).decode()
        return ItemOutcome([record], _final_error(result), history, detail=result)


def delivery_sink(
    runtime: Runtime, stage: Stage, deliverer: Deliverer, grace_s: float, deliveries_topic: str
) -> BatchingSink[RequestDescriptor]:
    """The sink that delivers `stage`'s batches with `deliverer`, results to `deliveries_topic`."""
    writer = DeliveryWriter(deliverer, deliveries_topic)

    def observe(message: InboundMessage, outcome: ItemOutcome) -> None:
        if isinstance(outcome.detail, DeliveryResult):
            metrics.observe_delivery(stage, message, outcome.detail)

    return BatchingSink(
        stage=stage,
        parse=lambda message: parse_descriptor(message.value),
        writer=writer,
        flow_control=runtime.app.flow_control,
        grace_s=grace_s,
        observe=observe,
    )


def build_delivery(runtime: Runtime, backend: Backend) -> DeliveryState:
    """The delivery stage and agent on `runtime`'s app, sending to `backend`'s API (no agent
    without an API key)."""
    topics = runtime.topics.for_backend(backend.name)
    api = backend.api()
    name = qualified("delivery", backend)
    state = DeliveryState(
        enabled=api.api_key is not None and bool(api.api_key.get_secret_value()),
        name=backend.name,
        display_name=backend.display_name,
        pipeline=name,
        rate_limit=api.rate_limit,
    )

    def to_delivery_replay(message: InboundMessage) -> list[OutboundRecord]:
        """How a replayed dead letter re-enters delivery: via a topic only this worker reads."""
        return [
            OutboundRecord(
                topic=topics.delivery_replay,
                key=message.key,
                value=message.value,
                headers=message.forwarded_headers(),
            )
        ]

    stage = runtime.build_stage(name, "deliver", to_delivery_replay)
    if not state.enabled:  # the composition root's start-up warnings say so
        return state

    limiter = shared_limiter(runtime.app, topics.requests, api, runtime.settings.topic_partitions)

    @runtime.app.agent(runtime.raw_topic(topics.requests, topics.delivery_replay), name=name)
    async def deliver_requests(stream: faust.StreamT[bytes]) -> None:
        async with Deliverer(backend, limiter=limiter) as deliverer:
            state.deliverer = deliverer
            sink = delivery_sink(
                runtime, stage, deliverer, api.give_back_after_s, topics.deliveries
            )
            await run_batches(
                stream,
                stage,
                sink.handle,
                batch_size=MAX_BATCH,
                within_s=api.bulk_linger_ms / 1000,
                with_mapping=False,
            )

    return state
