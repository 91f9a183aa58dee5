"""`Breaker`: pauses a pipeline whose own code fails most messages; bad data never counts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from itertools import islice, repeat

from worker.errors import PipelinePaused

__all__ = ["Breaker"]

log = logging.getLogger(__name__)


class Breaker:
    """Pauses a pipeline whose own code fails: most recent messages ended in `UnexpectedError`.

    Bad data never counts: a burst of invalid or refused messages, however concentrated, is what
    the dead-letter topic is for, and the stream moves on. A bug fails messages whatever they
    hold; over a sliding window of the last `window` messages, once at least `min_messages`
    were seen, an `UnexpectedError` ratio above `max_ratio` trips the breaker: one critical line,
    and the pipeline's stages take no more messages (the batch in hand is finished, its letters
    replayable) until `resume` (an operator) or a restart (a new deploy). Pausing rather than
    exiting means a restart does not loop on the same batch, and the other pipelines and the
    ingest keep running.
    """

    def __init__(
        self, *, window: int, min_messages: int, max_ratio: float, pipeline: str = ""
    ) -> None:
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._failed = 0
        self._min_messages = min_messages
        self._max_ratio = max_ratio
        self.pipeline = pipeline
        #: why the pipeline is paused; None while it runs
        self.tripped: PipelinePaused | None = None
        #: when it was paused (seconds since the epoch)
        self.paused_since: float | None = None
        self._resumed = asyncio.Event()
        self._tripped_now = asyncio.Event()

    @property
    def paused(self) -> bool:
        return self.tripped is not None

    def record(self, *, unexpected: bool) -> None:
        """Count one message where it ended; `unexpected` when it failed in our own code."""
        if len(self._outcomes) == self._outcomes.maxlen and self._outcomes[0]:
            self._failed -= 1
        self._outcomes.append(unexpected)
        self._failed += unexpected
        seen = len(self._outcomes)
        if (
            self.tripped is None
            and seen >= self._min_messages
            and self._failed / seen > self._max_ratio
        ):
            self.tripped = PipelinePaused(
                f"{self._failed} of the last {seen} messages failed in the worker's own code "
                f"(UnexpectedError; limit {self._max_ratio:.0%}): a bug, not bad data; paused "
                "until resumed (POST /admin/pipelines/<name>/resume) or redeployed"
            )
            self.paused_since = time.time()
            self._resumed.clear()
            self._tripped_now.set()
            log.critical("pipeline %s paused: %s", self.pipeline or "?", self.tripped)

    def record_ok(self, count: int) -> None:
        """`record(unexpected=False)` `count` times: messages that ended well trip nothing."""
        outcomes = self._outcomes
        if self._failed:
            evicted = min(len(outcomes) + count - (outcomes.maxlen or 0), len(outcomes))
            if evicted > 0:
                self._failed -= sum(islice(outcomes, evicted))
        outcomes.extend(repeat(False, count))

    def resume(self) -> bool:
        """Take messages again, with a fresh window; False when it was not paused."""
        if self.tripped is None:
            return False
        self.tripped = None
        self.paused_since = None
        self._outcomes.clear()
        self._failed = 0
        self._tripped_now.clear()
        self._resumed.set()
        log.warning("pipeline %s resumed by an operator", self.pipeline or "?")
        return True

    async def wait_resumed(self) -> None:
        """Return once the pipeline runs (at once when it is not paused)."""
        while self.tripped is not None:
            await self._resumed.wait()

    async def wait_tripped(self) -> None:
        """Return once the pipeline is paused (at once when it is)."""
        await self._tripped_now.wait()
