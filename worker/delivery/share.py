"""One process's share of an API key's rate limit: the slots its requests-topic partitions hold.

Every process of the consumer group computes the same table from partition numbers and the
wall clock alone, without talking to the others:

- `apportion`: the key's `limit` slots (L, `RateLimiter.limit`) over the P partitions of the
  backend's requests topic. Partition j holds L // P slots, plus one of the L % P remainder
  slots in epoch e when (j - e) mod P < L % P. An epoch is `epoch_s` of wall-clock time
  (`EPOCH_HANDOVERS` hand-over delays), so the remainder rotates and a fractional share
  averages out: 5 slots over 3 partitions are 2, 2, 1, then 1, 2, 2, then 2, 1, 2, ...; and a
  partition that holds no slot in one epoch (fewer slots than partitions) gets its turn.
- A process's nominal share at a moment: the slots of the partitions it owns then, in that
  moment's epoch and in the epoch `clock_margin_s` earlier, whichever is less (replicas' wall
  clocks may differ by that much, so near a boundary they may disagree on the epoch).
- `KeyShare.capacity()`: the least nominal share of the last `handover_s` (the limiter's window
  plus the request timeout). A share lost is lost at once; a share gained is used only once the
  previous holder's last request has arrived and left the window. A process that owns no
  partition has none and sends nothing. The argument that the group never passes the key's
  limit is in `worker.delivery.ratelimit`.

Ownership follows faust's rebalances (`follow_partitions`): a partition counts from the end of
its assignment until the end of its revocation (faust waits for the batch in hand first), and
until the process starts shutting down; the next owner is only assigned once this process has
rejoined the group. A partition assigned again to the process that held it in the previous
generation was held by nobody else in between, so it counts throughout the rebalance.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass
from typing import Any, Protocol

import faust
from faust.types import TP

from worker.backends.seam import ApiSettings
from worker.delivery.ratelimit import RateLimiter, slots_per_window

__all__ = [
    "CLOCK_MARGIN_S",
    "EPOCH_HANDOVERS",
    "Clock",
    "KeyShare",
    "apportion",
    "follow_partitions",
    "shared_limiter",
]

#: The most two replicas' wall clocks may differ (NTP keeps them within milliseconds).
CLOCK_MARGIN_S = 0.1

#: An epoch of the remainder's rotation, in hand-over delays: a remainder slot that moves to
#: another process idles one hand-over delay per epoch, a third of an epoch at most.
EPOCH_HANDOVERS = 3


def apportion(limit: int, partitions: int, epoch: int) -> list[int]:
    """The slots each partition holds in `epoch` (they sum to `limit`)."""
    return [_slots(limit, partitions, {j}, epoch) for j in range(partitions)]


def _slots(limit: int, partitions: int, owned: Set[int], epoch: int) -> int:
    if not partitions or not owned:
        return 0
    base, remainder = divmod(limit, partitions)
    return base * len(owned) + sum(1 for j in owned if (j - epoch) % partitions < remainder)


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class _SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


@dataclass(frozen=True, slots=True)
class _Owned:
    """From `since` (monotonic) until the next entry, the process owned `partitions` of a topic
    of `total` partitions."""

    since: float
    partitions: frozenset[int]
    total: int


class KeyShare:
    """The slots of one key this process may hold now (`capacity`), from its partitions of the
    key's requests topic (`assigned`, `revoked`) and the wall clock."""

    def __init__(
        self,
        limit: int,
        handover_s: float,
        *,
        epoch_s: float | None = None,
        clock_margin_s: float = CLOCK_MARGIN_S,
        clock: Clock | None = None,
    ) -> None:
        self.limit = limit
        self.handover_s = handover_s
        self.epoch_s = epoch_s if epoch_s is not None else EPOCH_HANDOVERS * handover_s
        if not self.epoch_s > 2 * clock_margin_s:
            raise ValueError("an epoch must be longer than twice the clock margin")
        self.clock_margin_s = clock_margin_s
        self._clock = clock or _SystemClock()
        self._history = [_Owned(self._clock.monotonic(), frozenset(), 0)]
        #: the last assignment (when, which partitions) and its generation
        self._assigned: _Owned | None = None
        self._generation: int | None = None
        self._listeners: list[Callable[[], None]] = []

    @property
    def owned(self) -> frozenset[int]:
        """The partitions owned now."""
        return self._history[-1].partitions

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever the partitions owned change."""
        self._listeners.append(listener)

    def assigned(self, partitions: Iterable[int], total: int, generation: int | None) -> None:
        """The group's generation `generation` assigned these partitions of `total`."""
        now = self._clock.monotonic()
        owned = frozenset(partitions)
        last = self._assigned
        if (
            last is not None
            and generation is not None
            and self._generation is not None
            and generation == self._generation + 1
            and last.total == total
        ):
            kept = last.partitions & owned
            self._history = [
                entry
                if entry.since <= last.since
                else _Owned(entry.since, entry.partitions | kept, total)
                for entry in self._history
            ]
        self._assigned = _Owned(now, owned, total)
        self._generation = generation
        self._history.append(self._assigned)
        self._changed()

    def revoked(self, partitions: Iterable[int]) -> None:
        """These partitions are no longer owned (their revocation ended)."""
        current = self._history[-1]
        remaining = current.partitions - frozenset(partitions)
        if remaining != current.partitions:
            self._history.append(_Owned(self._clock.monotonic(), remaining, current.total))
            self._changed()

    def released(self) -> None:
        """Nothing is owned any more (the process is stopping)."""
        self.revoked(self.owned)

    def capacity(self) -> int:
        """The least nominal share of the last `handover_s`."""
        now, offset = self._now()
        start = now - self.handover_s
        self._forget_before(start)
        history = self._history
        least = self.limit
        for i, entry in enumerate(history):
            end = history[i + 1].since if i + 1 < len(history) else now
            begin = max(entry.since, start)
            first = math.floor((begin + offset - self.clock_margin_s) / self.epoch_s)
            last = math.floor((end + offset) / self.epoch_s)
            for epoch in range(first, last + 1):
                least = min(least, _slots(self.limit, entry.total, entry.partitions, epoch))
            if not least:
                break
        return least

    def rise_in(self) -> float:
        """Seconds until the capacity may rise with no new assignment: when an ownership, or the
        oldest epoch counted, leaves the last `handover_s`."""
        now, offset = self._now()
        start = now - self.handover_s
        oldest = start + offset - self.clock_margin_s  # wall time of the oldest moment counted
        waits = [(math.floor(oldest / self.epoch_s) + 1) * self.epoch_s - oldest]
        waits += [entry.since - start for entry in self._history[1:] if entry.since > start]
        return min(waits)

    def _now(self) -> tuple[float, float]:
        """Monotonic now, and what turns a monotonic time into a wall-clock one."""
        now = self._clock.monotonic()
        return now, self._clock.time() - now

    def _forget_before(self, start: float) -> None:
        """Drop the ownerships that ended before `start` (the first one left then covers it)."""
        history = self._history
        drop = 0
        while drop + 1 < len(history) and history[drop + 1].since <= start:
            drop += 1
        if drop:
            del history[:drop]

    def _changed(self) -> None:
        self._forget_before(self._clock.monotonic() - self.handover_s)
        for listener in self._listeners:
            listener()


def follow_partitions(
    app: faust.App, topic: str, share: KeyShare, total: Callable[[], int]
) -> None:
    """Keep `share` on this process's partitions of `topic` (`total()` of them), through the
    app's rebalances and its shutdown."""

    def mine(tps: Iterable[TP]) -> set[int]:
        return {tp.partition for tp in tps if tp.topic == topic}

    # faust's signals call receivers with (sender, *arguments, signal=..., **keywords)
    def on_revoked(_app: Any, *args: Any, **_: Any) -> None:
        revoked: Set[TP] = args[0]
        share.revoked(mine(revoked))

    def on_assigned(_app: Any, *args: Any, **_: Any) -> None:
        assigned: Set[TP] = args[0]
        share.assigned(mine(assigned), total(), app.consumer_generation_id)

    def on_stopping(_app: Any, *_args: Any, **_: Any) -> None:
        share.released()

    # mode's handler type rejects even a receiver of exactly its signature
    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]
    app.on_before_shutdown.connect(on_stopping)  # type: ignore[arg-type]


def shared_limiter(app: faust.App, topic: str, api: ApiSettings, partitions: int) -> RateLimiter:
    """The rate limiter of `api`'s key for this process: its share follows its partitions of the
    key's requests topic `topic` (`partitions` of them, unless the consumer knows better)."""
    limit, window_s = slots_per_window(api.rate_limit)
    share = KeyShare(limit, handover_s=window_s + api.request_timeout_s)

    def total() -> int:
        return app.consumer.topic_partitions(topic) or partitions

    follow_partitions(app, topic, share, total)
    return RateLimiter(api.rate_limit, share=share, request_timeout_s=api.request_timeout_s)
