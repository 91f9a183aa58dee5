"""The delivery sink's batch when a rebalance or a shutdown gives it back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

import orjson
import pytest
from mode.utils.queues import FlowControlEvent

from tests.unit.doubles import RecordingSender
from worker.delivery.agents import DeliveryWriter, parse_descriptor
from worker.delivery.service import Deliverer
from worker.errors import BatchGivenBack
from worker.models.autopilot_request import RequestDescriptor
from worker.models.delivery_result import DeliveryResult
from worker.pipeline.breaker import Breaker
from worker.pipeline.records import InboundMessage, OutboundRecord
from worker.pipeline.stage import Stage
from worker.runtime.sink import BatchingSink


class StuckDeliverer:
    """Delivery during an outage: never done."""

    async def deliver(self, batch: Sequence[RequestDescriptor]) -> list[DeliveryResult]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def message(value: bytes, offset: int) -> InboundMessage:
    return InboundMessage("autopilot.requests", 0, offset, 1_700_000_000_000, b"k", value)


def _placeholder(message: InboundMessage) -> list[OutboundRecord]:
    return []


async def test_a_batch_given_back_is_not_counted_routed_or_sent() -> None:
    """It is read again later and counted then; its invalid descriptor is dead-lettered then."""
    flow_control = FlowControlEvent()
    flow_control.suspend()  # a rebalance began
    sender = RecordingSender()
    breaker = Breaker(window=10, min_messages=1, max_ratio=0.9)
    stage = Stage("delivery", "deliver", _placeholder, sender, "dlq", breaker)
    sink = BatchingSink(
        stage=stage,
        parse=lambda m: parse_descriptor(m.value),
        writer=DeliveryWriter(cast(Deliverer, StuckDeliverer()), "deliveries"),
        flow_control=flow_control,
        grace_s=0.01,
    )
    descriptor = {
        "method": "POST",
        "path": "/v1/contact",
        "json": {"contact": {"Email": "a@example.com"}},
        "kind": "upsert_contact",
        "message_id": "m-1",
        "contact": "a@example.com",
    }
    batch = [message(orjson.dumps(descriptor), 0), message(b"{not a descriptor", 1)]

    with pytest.raises(BatchGivenBack):
        await sink.handle(batch)

    assert stage.stats.consumed == 0
    assert stage.stats.dead_lettered == {}
    assert sender.sent == []
