"""The faust app class, and the parts of faust the worker replaces.

**Commits** (`StrictCommitConsumer`). faust commits, per partition, the end of the first run of
consecutive acked offsets. In faust-streaming 0.15.3 that run can begin past an offset nobody
acked, and it can stall; the reliability suite (kill -9 and restart mid-stream) found both:

- its check that the run begins at the committed offset lets one missing offset through
  (`min(acked) - committed > 1`), and is skipped when the committed offset is 0, which faust
  also stores as "none" after a seek;
- a message delivered twice (records fetched before the seek to the committed offsets that
  follows a rebalance) can be acked twice, the second ack landing in `acked` while the first
  one's commit is in flight; the run then stops at the duplicate and the commit creeps forward
  one offset per commit interval;
- acked offsets below the committed one stay in the list.

`StrictCommitConsumer` keeps `acked` unique and at or above the committed offset, and commits
only a run that begins exactly at the committed offset (or at a gap faust recorded for records
it never delivers, such as transaction markers). A partition with no committed offset yet keeps
faust's rule: its run begins at the lowest acked offset.

Holding the commit back is safe but can stall: after a restart the suite also saw a partition
whose next offset was never handed to the agent at all while later ones were (faust drops the
rest of a fetched batch when a rebalance interrupts it, and relies on a seek that can come
first). Acks are in offset order within a partition, so a partition whose later offsets are
acked while the committed one is not for `REWIND_AFTER_S` is read again from the committed
offset: the missing records are processed (those after them a second time; outputs are
at-least-once, and deduplicated downstream by messageId).

**The fetch loop** (`StrictCommitConsumer._drain_messages`). faust hands each fetched message
to the streams under its own `wait_first` (four futures, one `asyncio.wait` and three
cancellations a message, about a tenth of the worker's CPU), so that a rebalance can interrupt a
hand-off blocked on a full stream buffer; it then records the message as read even when the
hand-off was abandoned. The worker's loop waits that way once per fetched batch, and records a
message as read only once it was handed off: a batch abandoned by a rebalance is fetched again.

**Per-event statistics** (`QuietMonitor`). faust's default monitor updates a dozen counters and
timers for every message and event, for faust's own web views, which the worker does not serve;
its metrics are its own (`worker.observability`). The quiet monitor keeps faust's offset
tracking and drops the per-event work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import faust
from faust.sensors import Monitor
from faust.transport.consumer import CONSUMER_FETCHING, ensure_TP
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

__all__ = ["REWIND_AFTER_S", "QuietMonitor", "StrictCommitConsumer", "WorkerApp"]

log = logging.getLogger(__name__)

#: How long a partition's commit may be held back by a missing offset before it is read again.
REWIND_AFTER_S = 15.0

#: Messages handed to the streams between two yields to the event loop (as faust does).
_YIELD_EVERY = 100


class StrictCommitConsumer(aiokafka_driver.Consumer):
    """faust's aiokafka consumer with a commit rule that cannot skip an unacked offset."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: partition -> when its commit was first held back by a missing offset (monotonic)
        self._held_since: dict[TP, float] = {}

    def _new_offset(self, tp: TP) -> int | None:
        acked = self._acked[tp]
        if acked:
            committed = self._committed_offset[tp]
            floor = -1 if committed is None else committed
            fresh = sorted({offset for offset in acked if offset >= floor})
            acked[:] = fresh
            self._acked_index[tp] = set(fresh)
            if committed is not None and not _run_can_begin(fresh, committed, self._gap[tp]):
                if fresh:
                    self._held_since.setdefault(tp, time.monotonic())
                return None
        self._held_since.pop(tp, None)
        offset: int | None = super()._new_offset(tp)
        return offset

    def held_too_long(self, now: float) -> list[tuple[TP, int]]:
        """Partitions held back for `REWIND_AFTER_S`, with the offset to read them from again."""
        held = []
        for tp, since in self._held_since.items():
            committed = self._committed_offset[tp]
            if committed is not None and now - since >= REWIND_AFTER_S:
                held.append((tp, committed))
        return held

    async def commit(self, *args: Any, **kwargs: Any) -> bool:
        """Commit as faust does, then read again any partition held back too long."""
        did_commit: bool = await super().commit(*args, **kwargs)
        assigned = self.assignment()
        for tp, offset in self.held_too_long(time.monotonic()):
            del self._held_since[tp]
            if tp in assigned:
                log.warning(
                    "%s[%d]: offset %d was never acknowledged while later ones were, for %.0f s; "
                    "reading the partition again from %d",
                    tp.topic,
                    tp.partition,
                    offset,
                    REWIND_AFTER_S,
                    offset,
                )
                await self.seek(tp, offset)
        return did_commit

    async def _drain_messages(self, fetcher: Any) -> None:
        """faust's fetch loop (see the module doc), one `wait_first` per fetched batch."""
        fetcher_stopped = fetcher._stopped.is_set
        try:
            while not (self._stopped.is_set() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                batch = self.getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    await self.wait_first(self._hand_off(batch), self.suspend_flow.wait())
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception:
            log.exception("fetching messages failed")
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _hand_off(self, batch: AsyncIterator[tuple[TP, Any]]) -> None:
        """Each message of a fetched batch to the streams, as faust does, message by message."""
        read_offset = self._read_offset
        since_yield = 0
        async for tp, message in batch:
            since_yield += 1
            if since_yield > _YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            offset = message.offset
            last_read = read_offset[tp]
            if last_read is not None and offset < last_read:
                continue  # read already (faust drops these too)
            if last_read and offset - last_read > 1 and self.app.topics.acks_enabled_for(tp.topic):
                await self._add_gap(tp, last_read + 1, offset)
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            await self.callback(message)
            read_offset[tp] = offset

    async def perform_seek(self) -> None:
        """Seek to the committed offsets, remembering a committed 0 as 0, not as "none"."""
        committed: Mapping[TP, int | None] = await self.seek_to_committed()
        for tp, offset in committed.items():
            known = offset is not None and offset >= 0
            self._read_offset[ensure_TP(tp)] = offset if known else None
            if known:
                self._committed_offset[ensure_TP(tp)] = offset


def _run_can_begin(acked: list[int], committed: int, gaps: object) -> bool:
    """Whether the committed offset itself is done: acked, or a record faust never delivers."""
    if not acked:
        return False
    return acked[0] == committed or bool(gaps.at(committed))  # type: ignore[attr-defined]


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None


class QuietMonitor(Monitor):
    """faust's monitor without its per-message and per-event bookkeeping."""

    on_message_in = on_message_out = staticmethod(_ignore)
    on_stream_event_in = on_stream_event_out = staticmethod(_ignore)
    on_send_initiated = on_send_completed = staticmethod(_ignore)
    on_table_get = on_table_set = staticmethod(_ignore)


class _Transport(aiokafka_driver.Transport):
    Consumer = StrictCommitConsumer


class WorkerApp(faust.App):
    """The faust app, on a transport whose consumer commits strictly (see the module doc)."""

    def _new_transport(self) -> _Transport:
        return _Transport(self.conf.broker_consumer, self)
