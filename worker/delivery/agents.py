"""The delivery agent: request descriptors -> the Autopilot API -> outcomes and dead letters.

A batch's offsets are acked only after every descriptor in it has a final outcome (delivered
or dead-lettered) and those outcomes are on Kafka. While the API refuses the key, `deliver`
does not return, so consumption pauses and nothing is acked, skipped or dead-lettered. When a
rebalance or a shutdown begins (both wait for every event taken to be acked), the batch in hand
gets `AUTOPILOT_GIVE_BACK_AFTER_S` to finish; then it is given back unacked, nothing of it
written, and the partition's next owner delivers it again (at least once).
Without AUTOPILOT_API_KEY this module registers no agent and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

import faust
import orjson
import pydantic

from worker.app import app, raw_topic, settings, topic_names
from worker.delivery.service import Deliverer, DeliveryResult
from worker.errors import DecodeError, DeliveryRejected, RetryBudgetExhausted, WorkerError
from worker.models.autopilot_request import RequestDescriptor
from worker.observability import metrics
from worker.pipeline import Pipeline
from worker.records import InboundMessage, OutboundRecord
from worker.streaming import run_batches, unless_flow_stops
from worker.wiring import build_pipeline

__all__ = ["delivery_state", "parse_descriptor"]

log = logging.getLogger(__name__)

#: Up to this many descriptors are handed to one `deliver` call (a few bulk requests' worth).
MAX_BATCH = 500


class DeliveryState:
    """What /readyz and the metrics read: the live Deliverer, when delivery runs."""

    deliverer: Deliverer | None = None
    enabled: bool = settings.autopilot_api_key is not None

    @property
    def paused(self) -> bool:
        return self.deliverer is not None and self.deliverer.paused


delivery_state = DeliveryState()


def parse_descriptor(raw: bytes) -> RequestDescriptor:
    """A descriptor from the requests topic; anything else is a 400 dead letter."""
    try:
        return RequestDescriptor.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise DecodeError(f"not a request descriptor: {where}: {first['msg']}") from None


def _outcome_record(result: DeliveryResult) -> OutboundRecord:
    return OutboundRecord(
        topic=topic_names.autopilot_deliveries,
        key=result.contact.encode(),
        value=orjson.dumps(result.model_dump(mode="json")),
        headers=[],
    )


def _final_error(result: DeliveryResult) -> WorkerError:
    message = result.error or "delivery failed"
    if result.error_class == RetryBudgetExhausted.__name__:
        status = result.status if isinstance(result.status, int) else None
        return RetryBudgetExhausted(message, http_status=status)
    status = result.status if isinstance(result.status, int) else 400
    return DeliveryRejected(message, http_status=status, body=result.response_body or "")


async def deliver_batch(
    deliverer: Deliverer, pipeline: Pipeline, messages: list[InboundMessage]
) -> Awaitable[object]:
    """Deliver `messages`; hand every outcome and dead letter to the producer, and return what
    completes once Kafka acknowledged them all."""
    valid: list[tuple[InboundMessage, RequestDescriptor]] = []
    invalid: list[tuple[InboundMessage, WorkerError]] = []
    for message in messages:
        try:
            valid.append((message, parse_descriptor(message.value)))
        except WorkerError as error:
            invalid.append((message, error))
    results = await unless_flow_stops(
        app.flow_control,
        deliverer.deliver([descriptor for _, descriptor in valid]),
        grace_s=settings.autopilot_give_back_after_s,
    )
    # counted only now: a batch given back is counted when it is read again
    pipeline.stats.consumed += len(messages)
    records: list[OutboundRecord] = []
    for message, refused in invalid:
        records.extend(pipeline.route_failure(message, refused))
    for (message, _), result in zip(valid, results, strict=True):
        metrics.observe_delivery(pipeline, message, result)
        records.append(_outcome_record(result))
        if result.outcome == "dead_lettered":
            history = orjson.dumps([a.model_dump(mode="json") for a in result.history]).decode()
            records.extend(pipeline.route_failure(message, _final_error(result), attempts=history))
        else:
            pipeline.breaker.record(unexpected=False)
            pipeline.stats.produced += 1
    return await pipeline.sender.send(records)


def to_delivery_replay(message: InboundMessage) -> list[OutboundRecord]:
    """How a replayed dead letter re-enters delivery: via a topic only this worker reads."""
    return [
        OutboundRecord(
            topic=topic_names.delivery_replay,
            key=message.key,
            value=message.value,
            headers=message.forwarded_headers(),
        )
    ]


_pipeline = build_pipeline("delivery", "deliver", to_delivery_replay)

if delivery_state.enabled:

    @app.agent(
        raw_topic(topic_names.autopilot_requests, topic_names.delivery_replay), name="delivery"
    )
    async def deliver_requests(stream: faust.StreamT[bytes]) -> None:
        async with Deliverer(settings) as deliverer:
            delivery_state.deliverer = deliverer

            async def handle(batch: list[InboundMessage]) -> Awaitable[object]:
                return await deliver_batch(deliverer, _pipeline, batch)

            await run_batches(
                stream,
                _pipeline,
                handle,
                batch_size=MAX_BATCH,
                within_s=settings.autopilot_bulk_linger_ms / 1000,
                with_mapping=False,
            )

else:
    log.warning(
        "AUTOPILOT_API_KEY is not set: the delivery agent is not started; request descriptors "
        "stay on %s until a worker with a key reads them",
        topic_names.autopilot_requests,
    )
