"""Storing a request's records: answered only once Kafka acknowledged every one, or 503.

`store_all` gives Kafka a deadline (INGEST_KAFKA_TIMEOUT_S) for the whole request, the time to
find the topic's leaders included: a topic that does not exist (auto-creation off) or a broker
that does not answer ends in `Unavailable`, never in a success. `TopicSender` produces through
faust's topics (the app's one producer, acks=all) and waits for the acks without cancelling
them on a timeout, so the producer's own bookkeeping is left intact.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol

from worker.ingest.problems import Unavailable
from worker.pipeline.records import OutboundRecord

__all__ = ["RecordSender", "SendableTopic", "TopicSender", "store_all"]

log = logging.getLogger(__name__)


class SendableTopic(Protocol):
    """What `TopicSender` needs of a faust topic: `send` returns the acknowledgement future."""

    async def send(
        self,
        *,
        key: bytes | None = ...,
        value: bytes | None = ...,
        headers: Any = ...,
        force: bool = ...,
    ) -> Awaitable[Any]: ...


class RecordSender(Protocol):
    async def send_all(self, records: Sequence[OutboundRecord]) -> None:
        """Produce `records` and return once Kafka acknowledged every one."""


class TopicSender:
    """A `RecordSender` over a fixed set of raw-bytes topics, by name."""

    def __init__(self, topics: Mapping[str, SendableTopic]) -> None:
        self._topics = dict(topics)

    async def send_all(self, records: Sequence[OutboundRecord]) -> None:
        futures = [
            asyncio.ensure_future(
                await self._topics[r.topic].send(
                    key=r.key, value=r.value, headers=r.headers or None, force=True
                )
            )
            for r in records
        ]
        if not futures:
            return
        # asyncio.wait, unlike gather, leaves the futures alone when this task is cancelled.
        await asyncio.wait(futures)
        for future in futures:
            future.result()  # the first failure, if any, is raised


async def store_all(
    sender: RecordSender,
    records: Sequence[OutboundRecord],
    *,
    timeout_s: float,
    what: str = "ingest",
) -> None:
    """Return once Kafka acknowledged every record; else raise `Unavailable` (a 503)."""
    if not records:
        return
    try:
        async with asyncio.timeout(timeout_s):
            await sender.send_all(records)
    except TimeoutError:
        log.warning(
            "%s: Kafka did not acknowledge %d record(s) on %s within %gs",
            what,
            len(records),
            records[0].topic,
            timeout_s,
        )
        raise Unavailable(
            "kafka_timeout", f"the messages were not stored within {timeout_s:g}s; retry"
        ) from None
    except Exception as exc:  # noqa: BLE001  (any producer failure means: not stored)
        log.warning(
            "%s: Kafka did not store %d record(s) on %s: %s: %s",
            what,
            len(records),
            records[0].topic,
            type(exc).__name__,
            exc,
        )
        raise Unavailable("kafka_unavailable", "the messages were not stored; retry") from None
