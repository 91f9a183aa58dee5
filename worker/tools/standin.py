"""What the stand-in APIs (`fake_autopilot`, `fake_ortto`) share: the gate before their /v1
routes (a per-key rate limit, injected faults, the log of what they answered), serving an aiohttp
app in a running loop or until interrupted, their command line, and reading a JSON body
leniently."""

from __future__ import annotations

import argparse
import asyncio
import errno
import math
import os
import random
import sys
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["HANG_S", "LOG_SIZE", "Faults", "Gate", "json_body", "main", "serve", "start"]

#: How long an injected timeout hangs before its 504.
HANG_S = 30.0
#: Requests kept in the log `/_state` shows.
LOG_SIZE = 10_000


class Faults(BaseModel):
    """What `POST /_faults` sets: errors, 429s, latency, hangs, or one status for every call."""

    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(0.0, ge=0, le=1)
    error_status: int = Field(503, ge=400, le=599)
    rate_limited_rate: float = Field(0.0, ge=0, le=1)
    latency_ms: float = Field(0.0, ge=0)
    timeout_rate: float = Field(0.0, ge=0, le=1)
    force_status: int | None = Field(None, ge=100, le=599)


class Gate:
    """What a /v1 request meets before its handler, after the key check: at most `rate_limit`
    requests per key in any sliding one-second window (every request that arrives counts; one
    that finds the window full gets the API's 429), then the injected `faults`; and the log of
    what was answered. `refuse(status, message)` and `too_many(wait_s)` word the API's errors."""

    def __init__(
        self,
        rate_limit: float,
        seed: int | None,
        *,
        refuse: Callable[[int, str], web.Response],
        too_many: Callable[[int], web.Response],
    ) -> None:
        self.rate_limit = rate_limit
        self._random = random.Random(seed)
        self._refuse = refuse
        self._too_many = too_many
        self.reset()

    def reset(self) -> None:
        """No faults, and nothing counted or logged."""
        self.faults = Faults()
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_SIZE)
        self.counts: Counter[tuple[str, int]] = Counter()
        self._windows: defaultdict[str, deque[float]] = defaultdict(deque)
        self.max_rate: dict[str, int] = {}
        self.rate_limited = self.injected_429 = 0

    async def admit(self, label: str, now: float) -> web.Response | None:
        """None when the request of key `label` may go on to its handler, else the answer it
        gets instead (a 429, or an injected fault)."""
        window = self._windows[label]
        while window and window[0] <= now - 1.0:
            window.popleft()
        full = len(window) >= self.rate_limit
        window.append(now)
        self.max_rate[label] = max(self.max_rate.get(label, 0), len(window))
        if full:
            self.rate_limited += 1
            return self._too_many(math.ceil(window[0] + 1.0 - now))
        faults = self.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.force_status is not None:
            return self._refuse(faults.force_status, "Fault injected: forced status.")
        if self._random.random() < faults.timeout_rate:
            await asyncio.sleep(HANG_S)
            return self._refuse(504, "Fault injected: timeout.")
        if self._random.random() < faults.rate_limited_rate:
            self.injected_429 += 1
            return self._too_many(1)
        if self._random.random() < faults.error_rate:
            return self._refuse(faults.error_status, "Fault injected: error.")
        return None

    def set_faults(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply `changes` to the faults (pydantic's ValidationError when one is wrong); the
        faults now."""
        self.faults = Faults.model_validate({**self.faults.model_dump(), **changes})
        return self.faults.model_dump()

    def record(self, request: web.Request, label: str | None, status: int) -> None:
        """Count and log the answer `status` to `request` (key `label`, None for no known key)."""
        resource = request.match_info.route.resource
        route = f"{request.method} {resource.canonical if resource else request.path}"
        self.counts[(route, status)] += 1
        self.log.append(
            {
                "at": time.time(),
                "route": route,
                "path": request.path,
                "key": label,
                "status": status,
            }
        )

    def requests(self) -> dict[str, Any]:
        """`/_state`'s `requests`: the total, counts by route and status, the log."""
        by_route: defaultdict[str, dict[str, int]] = defaultdict(dict)
        for (route, status), count in sorted(self.counts.items()):
            by_route[route][str(status)] = count
        return {"total": sum(self.counts.values()), "by_route": by_route, "log": list(self.log)}


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; {} for anything else (the handlers then refuse what lacks)."""
    try:
        value = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


async def start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serve `app` in the running event loop (port 0 picks a free one); returns the runner, to
    `cleanup()` when done, and the base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_host, bound_port = runner.addresses[0][:2]
    return runner, f"http://{bound_host}:{bound_port}"


def serve(app: web.Application, *, host: str, port: int, banner: str) -> None:
    """Serve `app` until interrupted; `banner` is printed once the port is bound."""

    def serving(_aiohttp_banner: str) -> None:
        print(banner, flush=True)

    web.run_app(app, host=host, port=port, access_log=None, shutdown_timeout=1.0, print=serving)


def main(
    argv: Sequence[str],
    *,
    command: str,
    api: str,
    port_variable: str,
    key_variable: str,
    default_port: int,
    default_rate: float,
    run: Callable[[int, Sequence[str], float, str], None],
) -> int:
    """The stand-in's command line: host, port (`port_variable`), keys (`key_variable`), rate;
    a taken port is one line naming the variable, exit 1."""
    parser = argparse.ArgumentParser(
        prog=f"python -m worker {command}", description=f"Serve a stand-in {api} API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get(port_variable) or default_port),
        help=f"default ${port_variable}, else {default_port} (as `make run`)",
    )
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        help=f"a key to accept (repeatable; default ${key_variable}, else dev-key)",
    )
    parser.add_argument("--rate-limit", type=float, default=default_rate, help="requests/s per key")
    args = parser.parse_args(list(argv))
    keys = args.api_keys or [os.environ.get(key_variable) or "dev-key"]
    try:
        run(args.port, keys, args.rate_limit, args.host)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        print(
            f"port {args.port} (the stand-in {api} API) is already in use by another "
            f"process: set {port_variable} (or --port) to a free port",
            file=sys.stderr,
        )
        return 1
    return 0
