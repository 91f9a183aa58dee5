"""Test doubles shared by the unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence

from worker.pipeline.records import OutboundRecord

__all__ = ["RecordingSender"]


class RecordingSender:
    """A pipeline's sender that keeps what it is given, acknowledged at once."""

    def __init__(self) -> None:
        self.sent: list[OutboundRecord] = []

    async def send(self, records: Sequence[OutboundRecord]) -> Awaitable[object]:
        self.sent.extend(records)
        acked = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked
