"""The first hour of a new user, run as they run it: `make run`'s greeting and the commands it
prints, and a taken port as one line naming the variable that moves it.

The port tests need no broker: every port is checked before anything starts. The greeting test
starts `deploy/run-local.py` on free ports with a data dir of its own (a JVM broker: Java and
the Kafka jars `localkafka.py fetch` copies), pastes the commands its block prints, and stops it
with Ctrl-C's SIGINT.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.conftest import load_localkafka
from tests.prerequisites import unavailable
from tests.workerproc import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LOCALKAFKA = ROOT / "deploy" / "local-kafka" / "localkafka.py"
RUN_LOCAL = ROOT / "deploy" / "run-local.py"
#: Settings of the developer's shell that would change what the scripts do.
_OURS = (
    "TOPIC_",
    "AUTOPILOT_",
    "SEGMENT_",
    "KAFKA_",
    "LOCAL_KAFKA_",
    "WORKER_",
    "FAKE_",
    "WAREHOUSE_",
)


def _env(**overrides: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    return {**clean, **overrides}


@contextlib.contextmanager
def _listening() -> Iterator[int]:
    """A port another process (this one) listens on, as a user's other program would."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@contextlib.contextmanager
def _listening_at(port: int) -> Iterator[bool]:
    """Listen on `port` if it can be had; yields whether it was."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            yield False
            return
        sock.listen()
        yield True


def _run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


# --- a taken port: one line naming its variable ------------------------------------------------


def test_kafka_up_names_the_variable_of_a_taken_client_port(tmp_path: Path) -> None:
    with _listening() as port:
        done = _run(
            [sys.executable, str(LOCALKAFKA), "up", "--data-dir", str(tmp_path)],
            _env(LOCAL_KAFKA_PORT=str(port), LOCAL_KAFKA_CONTROLLER_PORT=str(free_port())),
        )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"localkafka: port {port} (the broker's client port) is already in use by another "
        "process: set LOCAL_KAFKA_PORT (or --port) to a free port"
    ]


def test_kafka_up_derives_the_controller_port_as_make_run_does(tmp_path: Path) -> None:
    """LOCAL_KAFKA_CONTROLLER_PORT defaults to LOCAL_KAFKA_PORT + 1 in both."""
    for _ in range(20):
        port = free_port()
        with _listening_at(port + 1) as held:
            if not held:
                continue
            done = _run(
                [sys.executable, str(LOCALKAFKA), "up", "--data-dir", str(tmp_path)],
                _env(LOCAL_KAFKA_PORT=str(port)),
            )
            assert done.returncode == 1
            assert done.stderr.splitlines() == [
                f"localkafka: port {port + 1} (the broker's controller port) is already in use "
                "by another process: set LOCAL_KAFKA_CONTROLLER_PORT (or --controller-port) to "
                "a free port (default: LOCAL_KAFKA_PORT + 1)"
            ]
            return
    pytest.fail("no free pair of ports")


def test_env_ports() -> None:
    lk = load_localkafka()
    saved = {
        k: os.environ.pop(k, None) for k in ("LOCAL_KAFKA_PORT", "LOCAL_KAFKA_CONTROLLER_PORT")
    }
    try:
        assert lk.env_ports() == (9092, 9093)
        os.environ["LOCAL_KAFKA_PORT"] = "19092"
        assert lk.env_ports() == (19092, 19093)
        os.environ["LOCAL_KAFKA_CONTROLLER_PORT"] = "29093"
        assert lk.env_ports() == (19092, 29093)
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


def test_the_worker_names_the_variable_of_a_taken_web_port() -> None:
    with _listening() as port:
        done = _run(
            [sys.executable, "-m", "worker", "run"],
            _env(WORKER_WEB_PORT=str(port), KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}"),
        )
    assert done.returncode == 70
    assert done.stderr.splitlines() == [
        f"port {port} (the worker's web server) is already in use by another process: "
        "set WORKER_WEB_PORT to a free port"
    ]


def test_the_stand_in_names_the_variable_of_a_taken_port() -> None:
    with _listening() as port:
        done = _run(
            [sys.executable, "-m", "worker", "fake-autopilot"], _env(FAKE_AUTOPILOT_PORT=str(port))
        )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"port {port} (the stand-in Autopilot API) is already in use by another process: "
        "set FAKE_AUTOPILOT_PORT (or --port) to a free port"
    ]


def test_make_run_checks_every_port_before_starting_anything(tmp_path: Path) -> None:
    with _listening() as kafka, _listening() as web, _listening() as fake:
        done = _run(
            [sys.executable, str(RUN_LOCAL)],
            _env(
                LOCAL_KAFKA_PORT=str(kafka),
                LOCAL_KAFKA_CONTROLLER_PORT=str(free_port()),
                LOCAL_KAFKA_DATA_DIR=str(tmp_path / "kafka"),
                WORKER_WEB_PORT=str(web),
                FAKE_AUTOPILOT_PORT=str(fake),
            ),
        )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"make run: port {web} (the worker's web server) is already in use by another process: "
        "set WORKER_WEB_PORT to a free port",
        f"make run: port {fake} (the stand-in Autopilot API) is already in use by another "
        "process: set FAKE_AUTOPILOT_PORT to a free port",
        f"make run: port {kafka} (the broker's client port) is already in use by another "
        "process: set LOCAL_KAFKA_PORT to a free port",
    ]
    assert done.stdout == ""
    assert not (tmp_path / "kafka").exists()  # nothing was started


# --- make run's greeting -----------------------------------------------------------------------


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def _read_until(lines: queue.Queue[str], seen: list[str], needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if needle in line:
            return
    raise AssertionError(f"{needle!r} not printed within {timeout:.0f} s:\n{''.join(seen)}")


def _commands(block: str) -> list[str]:
    """The curl commands of the block, each with its continuation line."""
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip().startswith("curl -s")]


def _state(fake: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{fake}/_state", timeout=5) as reply:  # noqa: S310  (loopback)
        state: dict[str, Any] = json.loads(reply.read())
    return state


def test_make_run_greets_once_ready_and_its_commands_work(tmp_path: Path) -> None:
    if shutil.which("java") is None:
        unavailable("make run's test needs Java for the local broker")
    web, fake_port = free_port(), free_port()
    fake = f"http://127.0.0.1:{fake_port}"
    env = _env(
        LOCAL_KAFKA_PORT=str(free_port()),
        LOCAL_KAFKA_CONTROLLER_PORT=str(free_port()),
        LOCAL_KAFKA_DATA_DIR=str(tmp_path / "kafka"),
        WORKER_WEB_PORT=str(web),
        FAKE_AUTOPILOT_PORT=str(fake_port),
        # a file of its own, not the repository's .cache/warehouse.duckdb a `make run` may hold
        WAREHOUSE_URL=f"duckdb://{tmp_path / 'warehouse.duckdb'}",
    )
    proc = subprocess.Popen(
        [sys.executable, str(RUN_LOCAL)],
        env=env,
        cwd=tmp_path,  # faust keeps its data directory in the current one
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        _read_until(lines, seen, "development settings", 30)
        assert "SEGMENT_WRITE_KEYS=dev-write-key" in seen[-1]
        assert "AUTOPILOT_WEBHOOK_TOKEN=dev-webhook-token" in seen[-1]
        _read_until(lines, seen, "autopilot-worker is ready", 150)
        # ready means ready: the worker answers /readyz 200 when the block starts
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/readyz", timeout=5) as reply:
            assert reply.status == 200
        start = len(seen)
        _read_until(lines, seen, "=" * 100, 10)
        block = "".join(seen[start:])
        for part in (
            f"http://127.0.0.1:{web}",
            f"{fake}  GET /_state",
            "POST /_faults",
            "segment.calls, autopilot.email-events",
            "segment.tracks, autopilot.requests, autopilot.deliveries",
            "autopilot-worker.dead-letters",
            "-m worker tail",
            "-m worker dlq list",
            "warehouse loader    tracks into WAREHOUSE_URL's database, schema autopilothq",
        ):
            assert part in block, part
        commands = _commands(block)
        assert len(commands) == 6  # identify, track, email event, bad track, /_state, /metrics
        for command in commands[:4]:
            done = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, timeout=30, check=False
            )
            assert done.stdout == '{"success":true}', (command, done.stdout, done.stderr)
            time.sleep(0.5)  # the track's email is learned from the identify before it
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = _state(fake)
            if state["contacts"] and state["journeys"]:
                break
            time.sleep(0.5)
        assert list(state["contacts"]) == ["ada@example.com"]
        assert [j["email"] for j in state["journeys"]] == ["ada@example.com"]
        assert re.search(r"\"plan\": \"pro\"", json.dumps(state["journeys"][0]["property"]))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert proc.returncode == 0, "".join(seen + rest)
    assert "stopped\n" in rest
