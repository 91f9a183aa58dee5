"""The delivery agent's batch when a rebalance or a shutdown gives it back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

import orjson
import pytest

from tests.unit.doubles import RecordingSender
from worker.app import app, settings
from worker.delivery import agents
from worker.delivery.service import Deliverer, DeliveryResult
from worker.errors import BatchGivenBack
from worker.models.autopilot_request import RequestDescriptor
from worker.pipeline import Breaker, Pipeline
from worker.records import InboundMessage


class StuckDeliverer:
    """Delivery during an outage: never done."""

    async def deliver(self, batch: Sequence[RequestDescriptor]) -> list[DeliveryResult]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def message(value: bytes, offset: int) -> InboundMessage:
    return InboundMessage("autopilot.requests", 0, offset, 1_700_000_000_000, b"k", value)


async def test_a_batch_given_back_is_not_counted_routed_or_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It is read again later and counted then; its invalid descriptor is dead-lettered then."""
    quick = settings.model_copy(update={"autopilot_give_back_after_s": 0.01})
    monkeypatch.setattr(agents, "settings", quick)
    app.flow_control.suspend()  # a rebalance began
    sender = RecordingSender()
    breaker = Breaker(window=10, min_messages=1, max_ratio=0.9)
    pipeline = Pipeline("delivery", "deliver", agents.to_delivery_replay, sender, "dlq", breaker)
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
        await agents.deliver_batch(cast(Deliverer, StuckDeliverer()), pipeline, batch)

    assert pipeline.stats.consumed == 0
    assert pipeline.stats.dead_lettered == {}
    assert sender.sent == []
