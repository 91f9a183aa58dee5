"""The worker as a process supervisor (systemd, Kubernetes) runs it: restarted whenever it exits.

`Supervisor` starts `python -m worker run` through `tests.workerproc.WorkerProcess`, watches it
from the test's event loop and starts it again after any exit it did not ask for (recording the
exit status), as `restartPolicy: Always` would. `kill9` is the test's own SIGKILL, followed by
an immediate restart. Every run appends to one log file, each start behind a marker line, so
the log can be scanned as a whole afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.workerproc import WorkerProcess

__all__ = ["CRASH_PATTERNS", "READY", "Exit", "Supervisor", "crash_lines"]

READY = "[^Worker]: Ready"
START_MARKER = "=== reliability supervisor: start"

#: Log text that means a crash, an agent restart or a stop. The worker's own last words come
#: from `worker.runtime.batches.stop_worker`; the others are faust's and mode's: an agent whose body
#: raised is crashed by mode (`Service.crash` logs "Crashed reason=...") and restarted by the
#: agent's supervisor ("Restarting dead ..."), which gives up past its restart budget.
CRASH_PATTERNS = (
    "stopping the worker",
    "Crashed reason=",
    "Restarting dead",
    "Max restarts exceeded",
    "Giving up on",
    "Error adding to take buffer",
)
_CRASH = re.compile("|".join(re.escape(p) for p in CRASH_PATTERNS))

#: faust logs this (a warning) when a changelog record cannot be applied, and its table
#: recovery then never ends: the worker never becomes ready, so waiting for it is pointless.
RECOVERY_ERROR = "Error in recovery"


def crash_lines(log_text: str) -> list[str]:
    """The log lines that report a crash, an agent restart or a worker stop."""
    return [line for line in log_text.splitlines() if _CRASH.search(line)]


@dataclass(frozen=True)
class Exit:
    """An exit the supervisor did not ask for."""

    at: float
    status: int | None
    last_lines: str


@dataclass
class Supervisor:
    env: dict[str, str]
    log_path: Path
    restart_delay_s: float = 1.0
    loglevel: str = "info"
    starts: int = 0
    kills: int = 0
    exits: list[Exit] = field(default_factory=list)
    ready_times_s: list[float] = field(default_factory=list)
    process: WorkerProcess | None = None
    _stopping: bool = False
    _watcher: asyncio.Task[None] | None = None
    _started_at: float = 0.0
    _ready_seen: int = 0

    async def __aenter__(self) -> Self:
        self._spawn()
        self._watcher = asyncio.create_task(self._watch())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _spawn(self) -> None:
        self.starts += 1
        with self.log_path.open("a") as log:
            log.write(f"{START_MARKER} {self.starts} at {time.time():.3f} ===\n")
        self._ready_seen = self.log_text().count(READY)
        self._started_at = time.monotonic()
        self.process = WorkerProcess(self.env, self.log_path, loglevel=self.loglevel).start()

    async def _watch(self) -> None:
        while not self._stopping:
            await asyncio.sleep(0.2)
            process = self.process
            if process is None or process.running or self._stopping:
                continue
            assert process.proc is not None
            self.exits.append(Exit(time.time(), process.proc.returncode, self.log_text()[-3000:]))
            await asyncio.sleep(self.restart_delay_s)
            if not self._stopping:
                self._spawn()

    async def wait_ready(self, timeout: float = 180.0) -> float:  # noqa: ASYNC109
        """Wait for the current run's "Ready" (restarts after exits included); seconds taken.

        Fails at once when the run's table recovery failed (it would never become ready).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            if text.count(READY) > self._ready_seen:
                taken = time.monotonic() - self._started_at
                self.ready_times_s.append(round(taken, 2))
                return taken
            current = text.rpartition(START_MARKER)[2]
            if RECOVERY_ERROR in current:
                await asyncio.sleep(2.0)  # let the log show what follows
                failed = [line for line in self.log_text().splitlines() if RECOVERY_ERROR in line]
                raise AssertionError(
                    f"start {self.starts}: table recovery failed, the worker cannot become "
                    f"ready ({len(failed)} lines like {failed[0]})"
                )
            await asyncio.sleep(0.25)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log_text()[-4000:]}")

    async def kill9(self) -> None:
        """SIGKILL the worker (no shutdown, no commit) and start it again at once."""
        assert self.process is not None
        self.process.kill()
        self.kills += 1
        self._spawn()

    def stop(self) -> None:
        """Stop watching, then a warm shutdown (SIGTERM) of the current run."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
        if self.process is not None and self.process.proc is not None:
            with contextlib.suppress(Exception):
                self.process.stop()

    def figures(self) -> dict[str, object]:
        return {
            "starts": self.starts,
            "kills": self.kills,
            "unexpected_exits": [e.status for e in self.exits],
            "seconds_to_ready": self.ready_times_s,
        }
