"""What the stand-in APIs (`fake_autopilot`, `fake_ortto`) share: serving an aiohttp app in a
running loop or until interrupted, their command line, and reading a JSON body leniently."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from aiohttp import web

__all__ = ["json_body", "main", "serve", "start"]


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
