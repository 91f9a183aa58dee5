"""Runs the real worker (`python -m worker run`) as a child process on unique topics."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = ["READY", "WorkerProcess", "free_port", "running_worker", "until_ready", "worker_env"]

#: The log line faust writes once the worker consumes.
READY = "[^Worker]: Ready"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def worker_env(bootstrap: str, suffix: str, **overrides: str) -> dict[str, str]:
    """Settings for a worker whose topics and consumer group nobody else uses."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "WORKER_APP_ID": f"worker-{suffix}",
        "TOPIC_EMAIL_EVENTS": f"email-events-{suffix}",
        "TOPIC_ORTTO_ACTIVITIES": f"ortto-activities-{suffix}",
        "TOPIC_SEGMENT_TRACKS": f"segment-tracks-{suffix}",
        "TOPIC_SEGMENT_CALLS": f"segment-calls-{suffix}",
        "TOPIC_AUTOPILOT_REQUESTS": f"autopilot-requests-{suffix}",
        "TOPIC_AUTOPILOT_DELIVERIES": f"autopilot-deliveries-{suffix}",
        "TOPIC_DEAD_LETTERS": f"dead-letters-{suffix}",
        "TOPIC_ORTTO_REQUESTS": f"ortto-requests-{suffix}",
        "TOPIC_ORTTO_DELIVERIES": f"ortto-deliveries-{suffix}",
        "TOPIC_PARTITIONS": "3",
        "WORKER_WEB_PORT": str(free_port()),
    }
    env.update(overrides)
    return env


@dataclass
class WorkerProcess:
    """One worker process; its stderr (JSON log lines) goes to `log_path`, and it runs in the
    folder of `log_path`, where faust keeps its data directory (not in the checkout)."""

    env: dict[str, str]
    log_path: Path
    loglevel: str = "info"
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> WorkerProcess:
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TOPIC_", "AUTOPILOT_", "ORTTO_"))
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker", "run", "--loglevel", self.loglevel],
                env={**clean, **self.env},
                cwd=self.log_path.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.env['WORKER_WEB_PORT']}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (a warm shutdown that commits), SIGKILL if it hangs; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9: no shutdown, no commit."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def wait_for_log(self, needle: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return
            if not self.running:
                raise AssertionError(f"worker exited:\n{self.log_text()[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{needle!r} not in the worker's log:\n{self.log_text()[-4000:]}")


@contextmanager
def running_worker(bootstrap: str, log_dir: Path, **overrides: str) -> Iterator[WorkerProcess]:
    """A worker on topics of its own, ready to consume; stopped (warm) on exit."""
    env = worker_env(bootstrap, uuid.uuid4().hex[:10], **overrides)
    process = WorkerProcess(env, log_dir / "worker.log").start()
    try:
        process.wait_for_log(READY)
        yield process
    finally:
        process.stop()


async def until_ready(worker: WorkerProcess, within_s: float = 90.0) -> None:
    """Return once `worker`'s /readyz answers 200: it has partitions, its tables recovered, no
    rebalance going on."""
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(base_url=worker.web_url, timeout=5) as client:
        while True:  # asked at least once
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() >= deadline:
                raise AssertionError(f"not ready within {within_s} s:\n{worker.log_text()[-3000:]}")
            await asyncio.sleep(0.2)
