"""The webhook's records, and storing: acks awaited, every failure of Kafka a 503."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

import orjson
import pytest

from worker.ingest.autopilot_webhook import event_key, webhook_records
from worker.ingest.problems import Unavailable
from worker.ingest.storing import TopicSender, store_all
from worker.pipeline.records import OutboundRecord

TOPIC = "autopilot.email-events"


def test_one_event_is_one_record_keyed_by_lowercased_email() -> None:
    event = {"id": "e1", "type": "email_opened", "contact": {"email": "Ann@Example.COM"}}
    [record] = webhook_records(event, topic=TOPIC)
    assert record.topic == TOPIC
    assert record.key == b"ann@example.com"
    assert orjson.loads(record.value) == event


def test_an_array_is_one_record_per_element_in_order_bad_ones_included() -> None:
    events: list[Any] = [
        {"id": "e1", "contact": {"email": "a@x.io"}},
        {"id": "e2"},
        "not an event",
        None,
        {"id": "e3", "contact": {"email": "B@x.io"}},
    ]
    records = webhook_records(events, topic=TOPIC)
    assert [r.key for r in records] == [b"a@x.io", None, None, None, b"b@x.io"]
    assert [orjson.loads(r.value) for r in records] == events
    assert webhook_records([], topic=TOPIC) == []


@pytest.mark.parametrize(
    "event",
    [{}, {"contact": None}, {"contact": {"email": ""}}, {"contact": {"email": 5}}, [], "x"],
)
def test_no_email_no_key(event: object) -> None:
    assert event_key(event) is None


# storing


RECORDS = [OutboundRecord("t", b"k", b"v", []), OutboundRecord("t", None, b"w", [])]


class _Sender:
    def __init__(self, fail: BaseException | None = None, hang: bool = False) -> None:
        self.fail = fail
        self.hang = hang
        self.sent: list[OutboundRecord] = []

    async def send_all(self, records: Sequence[OutboundRecord]) -> None:
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail is not None:
            raise self.fail
        self.sent.extend(records)


async def test_store_all_returns_once_the_sender_has_the_acks() -> None:
    sender = _Sender()
    await store_all(sender, RECORDS, timeout_s=1)
    assert sender.sent == RECORDS


async def test_nothing_to_store_does_not_touch_kafka() -> None:
    await store_all(_Sender(fail=RuntimeError("no")), [], timeout_s=1)


@pytest.mark.parametrize(
    "error", [RuntimeError("broker down"), OSError("connection refused"), KeyError("t")]
)
async def test_a_failing_sender_is_503(error: Exception) -> None:
    with pytest.raises(Unavailable) as caught:
        await store_all(_Sender(fail=error), RECORDS, timeout_s=1)
    assert caught.value.status == 503
    assert caught.value.code == "kafka_unavailable"


async def test_a_sender_past_the_deadline_is_503() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Unavailable) as caught:
        await store_all(_Sender(hang=True), RECORDS, timeout_s=0.05)
    assert caught.value.code == "kafka_timeout"
    assert loop.time() - started < 1


class _Topic:
    """A faust topic stand-in: `send` returns the future the producer resolves later."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[Any]] = []
        self.sent: list[dict[str, Any]] = []

    async def send(self, **kwargs: Any) -> Awaitable[Any]:
        self.sent.append(kwargs)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


async def test_topic_sender_waits_for_every_ack() -> None:
    topic = _Topic()
    sender = TopicSender({"t": topic})
    task = asyncio.ensure_future(sender.send_all(RECORDS))
    await asyncio.sleep(0.01)
    assert [s["key"] for s in topic.sent] == [b"k", None]
    assert all(s["force"] for s in topic.sent)
    topic.futures[0].set_result("meta-0")
    await asyncio.sleep(0.01)
    assert not task.done()
    topic.futures[1].set_result("meta-1")
    await asyncio.wait_for(task, 1)


async def test_topic_sender_raises_a_failed_ack() -> None:
    topic = _Topic()
    task = asyncio.ensure_future(TopicSender({"t": topic}).send_all(RECORDS))
    await asyncio.sleep(0.01)
    topic.futures[0].set_result("meta")
    topic.futures[1].set_exception(RuntimeError("NotEnoughReplicas"))
    with pytest.raises(RuntimeError, match="NotEnoughReplicas"):
        await asyncio.wait_for(task, 1)


async def test_a_timeout_leaves_the_producers_futures_alone() -> None:
    topic = _Topic()
    with pytest.raises(Unavailable):
        await store_all(TopicSender({"t": topic}), RECORDS, timeout_s=0.05)
    assert len(topic.futures) == 2
    assert not any(f.cancelled() for f in topic.futures)
