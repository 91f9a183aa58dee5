"""`make run [BACKEND=autopilot|ortto|both]`: a local Kafka, the stand-in API(s) and the
worker, until Ctrl-C.

`--backend` picks the destination APIs the worker serves: Autopilot (the default), Ortto, or
both at once (a migration). For each, its stand-in API is started unless its base URL is set
(AUTOPILOT_BASE_URL, ORTTO_BASE_URL; with it, delivery goes where the variable says). With
Ortto alone, AUTOPILOT_API_KEY is left out, so the worker serves Ortto only. The broker keeps
its data in `.cache/kafka/data` between runs.

Development credentials are configured unless the environment sets its own, and printed: a
Segment write key, the Autopilot and Ortto webhook tokens, with the Autopilot stand-in its API
key and a journey trigger for every track, and with Ortto its API key (the stand-in's,
`dev-key`). Once the worker answers `/readyz` (not before), a short block says what runs where,
lists the topics and gives commands to paste: an identify, a track, an email event, a bad
input, and ways to watch the outputs (each stand-in's `/_state` among them).
Unless WAREHOUSE_URL is set, the warehouse loader writes the tracks into the DuckDB file
`.cache/warehouse.duckdb`; DuckDB lets no other process open it while the worker writes, so a
query to try is printed once the worker stopped.

Every port is checked first: one taken is one line naming the variable that moves it, and
nothing is started. On Ctrl-C (or SIGTERM) the worker stops first (a warm shutdown that commits
its offsets), then the stand-ins, then the broker.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, ModuleType

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FAKE_PORT = 8765
DEFAULT_FAKE_ORTTO_PORT = 8788
#: `--backend`: the destination APIs the worker serves.
BACKENDS = ("autopilot", "ortto", "both")
DEV_KEY = "dev-key"
DEV_WRITE_KEY = "dev-write-key"
DEV_WEBHOOK_TOKEN = "dev-webhook-token"  # noqa: S105  (a development token, printed)
DEV_TRIGGER = "dev-trigger"
#: How long the worker may take to answer /readyz before the block says it is not ready yet.
READY_TIMEOUT_S = 120.0
WAREHOUSE_FILE = ROOT / ".cache" / "warehouse.duckdb"
TRY_QUERY = (
    "SELECT event_text, count(*) AS events, max(timestamp) AS latest "
    "FROM {schema}.tracks GROUP BY 1 ORDER BY 2 DESC"
)


def _query_hint(schema: str) -> str:
    """How to look into the DuckDB file once the worker let go of it."""
    path = os.path.relpath(WAREHOUSE_FILE)
    code = (
        f"import duckdb; duckdb.connect('{path}', read_only=True)"
        f".sql('{TRY_QUERY.format(schema=schema)}').show()"
    )
    python = os.path.relpath(sys.executable)
    return f'warehouse: the tracks are in {path} (schema {schema}); try\n  {python} -c "{code}"'


def _load_localkafka() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "localkafka", ROOT / "deploy" / "local-kafka" / "localkafka.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["localkafka"] = module
    spec.loader.exec_module(module)
    return module


def _stop(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _settings_problem() -> int | None:
    """The worker's own check of its settings (one line per invalid variable, exit 70), before
    anything is started."""
    sys.path.insert(0, str(ROOT))
    from worker.__main__ import settings_problem  # noqa: PLC0415

    return settings_problem()


def _port(variable: str, default: int) -> int:
    value = os.environ.get(variable)
    try:
        return int(value) if value else default
    except ValueError:
        raise SystemExit(f"{variable}={value!r} is not a port number") from None


def serves(backend: str, api: str) -> bool:
    """Whether `--backend` `backend` serves the destination API `api` (autopilot, ortto)."""
    return backend in (api, "both")


def dev_environment(
    environ: dict[str, str], *, stand_in: bool, ortto: bool = False
) -> dict[str, str]:
    """The development settings `make run` adds where `environ` sets none: `stand_in`, the
    Autopilot stand-in is used; `ortto`, the worker serves Ortto (its key: the stand-in's)."""
    added = {
        "SEGMENT_WRITE_KEYS": DEV_WRITE_KEY,
        "AUTOPILOT_WEBHOOK_TOKEN": DEV_WEBHOOK_TOKEN,
        "ORTTO_WEBHOOK_TOKEN": DEV_WEBHOOK_TOKEN,
    }
    if stand_in:
        added["AUTOPILOT_API_KEY"] = DEV_KEY
        if not environ.get("AUTOPILOT_TRIGGERS"):
            added["AUTOPILOT_TRIGGER_ID"] = DEV_TRIGGER
    if ortto:
        added["ORTTO_API_KEY"] = DEV_KEY
    return {name: value for name, value in added.items() if not environ.get(name)}


def taken_ports(checks: list[tuple[int, str, str]], in_use: Callable[[int], bool]) -> list[str]:
    """One line per port of `checks` (port, what listens there, its variable) that is taken."""
    return [
        f"make run: port {port} ({what}) is already in use by another process: set {variable} "
        "to a free port"
        for port, what, variable in checks
        if in_use(port)
    ]


def _get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310  (loopback)
            return reply.status, reply.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except OSError as error:
        return 0, str(error)


def wait_ready(web: str, alive: Callable[[], bool], timeout_s: float = READY_TIMEOUT_S) -> str:
    """Poll the worker's /readyz until it answers 200; '' then, else why it is not ready (the
    worker exited, was stopped, or the last answer within `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not alive():
            return "stopped before it was ready"
        status, body = _get(f"{web}/readyz")
        if status == 200:
            return ""
        if status:
            last = f"/readyz answers {status}: {body.strip()[:300]}"
        time.sleep(0.5)
    return f"is not ready after {timeout_s:.0f} s ({last})"


def _python() -> str:
    """The interpreter to paste: `.venv/bin/python` when it is this folder's venv."""
    executable = Path(sys.executable)
    try:
        return str(executable.relative_to(Path.cwd()))
    except ValueError:
        return shlex.quote(str(executable))


def greeting(
    *,
    bootstrap: str,
    data_dir: Path,
    web: str,
    fake: str | None,
    env: dict[str, str],
    topics: dict[str, str],
    python: str,
    kafka_prefix: str,
    backend: str = "autopilot",
    fake_ortto: str | None = None,
    warehouse: str | None = None,
) -> str:
    """The block `make run` prints once the worker is ready: `fake` and `fake_ortto` are the
    stand-ins' URLs (None: not started), `backend` the `--backend` served."""
    write_key = env["SEGMENT_WRITE_KEYS"].split(",")[0].strip()
    token = env["AUTOPILOT_WEBHOOK_TOKEN"]
    ortto_token = env.get("ORTTO_WEBHOOK_TOKEN", "not set: 503")
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    identify = {"userId": "u-1", "traits": {"email": "ada@example.com", "firstName": "Ada"}}
    track = {"userId": "u-1", "event": "Signed Up", "properties": {"plan": "pro"}}
    autopilot, ortto = serves(backend, "autopilot"), serves(backend, "ortto")
    # a track Autopilot refuses lacks an email; Ortto takes a userId instead, so not a userId
    bad: dict[str, str] = {"userId": "u-2", "event": "Signed Up"}
    needs = "a track needs an email"
    if ortto:
        bad = {"anonymousId": "a-2", "event": "Signed Up"}
        needs += " or a userId" if not autopilot else ""
    event = {
        "id": "evt_1",
        "type": "email_opened",
        "occurred_at": now,
        "contact": {"contact_id": "person_1", "email": "ada@example.com"},
        "email": {"id": "email_1", "subject": "Welcome"},
    }

    def post(path: str, body: object, auth: str) -> str:
        return (
            f"curl -s {auth}{shlex.quote(web + path)} -H 'Content-Type: application/json' \\\n"
            f"       -d {shlex.quote(json.dumps(body))}"
        )

    segment = f"-u {shlex.quote(write_key + ':')} "
    trigger = env.get("AUTOPILOT_TRIGGER_ID") or "AUTOPILOT_TRIGGERS"
    apis: list[str] = []
    if autopilot and fake is None:
        apis.append(
            f"  Autopilot API       {env.get('AUTOPILOT_BASE_URL', '?')} (AUTOPILOT_BASE_URL)"
        )
    elif autopilot:
        apis.append(
            f"  stand-in Autopilot  {fake}  GET /_state (what it received), POST /_faults "
            f"(inject errors, latency, 429s), POST /_reset\n                      API key "
            f"{env['AUTOPILOT_API_KEY']}, journey trigger {trigger} for every track"
        )
    if ortto and fake_ortto is None:
        apis.append(
            f"  Ortto API           {env.get('ORTTO_BASE_URL') or 'the ORTTO_REGION host'} "
            "(ORTTO_BASE_URL, ORTTO_REGION)"
        )
    elif ortto:
        apis.append(
            f"  stand-in Ortto      {fake_ortto}  GET /_state (what it received), POST /_faults "
            f"(inject errors, latency, 429s), POST /_reset\n                      API key "
            f"{env['ORTTO_API_KEY']}, an activity for every track"
        )
    outputs = [topics["segment_tracks"]]
    if autopilot:
        outputs += [topics["autopilot_requests"], topics["autopilot_deliveries"]]
    if ortto:
        outputs += [topics["ortto_requests"], topics["ortto_deliveries"]]
    requests = " and ".join(
        name
        for name, on in (
            (f"a contact upsert ({topics['autopilot_requests']})", autopilot),
            (f"a person merge ({topics['ortto_requests']})", ortto),
        )
        if on
    )
    at = "each" if autopilot and ortto else "the"
    entries = " and ".join(
        name for name, on in (("a journey entry", autopilot), ("an Ortto activity", ortto)) if on
    )
    lines = [
        "",
        "=" * 100,
        "autopilot-worker is ready. Ctrl-C stops what make run started (the worker first).",
        "",
        f"  Kafka broker        {bootstrap}  (data in {data_dir})",
        f"  worker web server   {web}  /healthz /readyz /metrics",
        f"                      Segment API: POST /v1/identify /v1/track /v1/batch ... "
        f"(write key {write_key})",
        f"                      Autopilot webhook: POST /autopilot/events (token {token})",
        f"                      Ortto webhook: POST /ortto/webhook (token {ortto_token})",
        *apis,
        *([f"  warehouse loader    tracks into {warehouse}"] if warehouse else []),
        "",
        f"  topics in:   {topics['segment_calls']}, {topics['email_events']}",
        f"         out:  {', '.join(outputs)}",
        f"         dead letters: {topics['dead_letters']}",
        "",
        "Try it from another terminal in this folder:",
        "",
        f"  {kafka_prefix}{python} -m worker tail      # watch the outputs and dead letters",
        "",
        f"  # an identify: {requests}, then a contact at {at} API",
        f"  {post('/v1/identify', identify, segment)}",
        f"  # a track of that user (its email learned from the identify): {entries}",
        f"  {post('/v1/track', track, segment)}",
        "  # an Autopilot email event: a Segment track on segment.tracks (and a warehouse row)",
        f"  {post(f'/autopilot/events?token={token}', event, '')}",
        f"  # a bad one: accepted (200), then dead-lettered ({needs})",
        f"  {post('/v1/track', bad, segment)}",
        "",
    ]
    if autopilot and fake is not None:
        lines.append(f"  curl -s {fake}/_state | {python} -m json.tool   # contacts, journeys")
    if ortto and fake_ortto is not None:
        lines.append(
            f"  curl -s {fake_ortto}/_state | {python} -m json.tool   # people, activities"
        )
    lines += [
        f"  {kafka_prefix}{python} -m worker dlq list  # dead letters: why, and which input",
        f"  curl -s {web}/metrics | grep autopilot_worker_messages   # in, out, skipped, dead",
        "=" * 100,
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915  (check, start, greet, wait, stop)
    parser = argparse.ArgumentParser(prog="make run", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=BACKENDS, default="autopilot")
    backend = parser.parse_args(argv).backend
    if not serves(backend, "autopilot"):
        os.environ.pop("AUTOPILOT_API_KEY", None)  # Ortto alone: the worker maps for it only
    problem = _settings_problem()
    if problem is not None:
        return problem
    from worker.__main__ import port_in_use  # noqa: PLC0415  (after _settings_problem's path)
    from worker.settings import get_settings  # noqa: PLC0415
    from worker.topics import TopicNames  # noqa: PLC0415

    localkafka = _load_localkafka()
    port, controller_port = localkafka.env_ports()
    kafka = localkafka.LocalKafka(port=port, controller_port=controller_port)
    stand_in = serves(backend, "autopilot") and "AUTOPILOT_BASE_URL" not in os.environ
    ortto_stand_in = serves(backend, "ortto") and "ORTTO_BASE_URL" not in os.environ
    fake_port = _port("FAKE_AUTOPILOT_PORT", DEFAULT_FAKE_PORT)
    fake_ortto_port = _port("FAKE_ORTTO_PORT", DEFAULT_FAKE_ORTTO_PORT)
    settings = get_settings()
    checks = [(settings.worker_web_port, "the worker's web server", "WORKER_WEB_PORT")]
    if stand_in:
        checks.append((fake_port, "the stand-in Autopilot API", "FAKE_AUTOPILOT_PORT"))
    if ortto_stand_in:
        checks.append((fake_ortto_port, "the stand-in Ortto API", "FAKE_ORTTO_PORT"))
    if not kafka.is_running():  # a broker of this data dir (make kafka-up) is used as it is
        checks.append((port, "the broker's client port", "LOCAL_KAFKA_PORT"))
        checks.append(
            (
                controller_port,
                "the broker's controller port",
                "LOCAL_KAFKA_CONTROLLER_PORT (default: LOCAL_KAFKA_PORT + 1)",
            )
        )
    taken = taken_ports(checks, port_in_use)
    if taken:
        print("\n".join(taken), file=sys.stderr)
        return 1

    added = dev_environment(dict(os.environ), stand_in=stand_in, ortto=serves(backend, "ortto"))
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap, **added)
    if added:
        said = ", ".join(f"{name}={value}" for name, value in added.items())
        print(f"development settings (set them to use others): {said}", flush=True)
    embedded_warehouse = not env.get("WAREHOUSE_URL")
    if embedded_warehouse:
        env["WAREHOUSE_URL"] = f"duckdb://{WAREHOUSE_FILE}"
    schema = env.get("WAREHOUSE_SCHEMA") or "autopilothq"
    stopping = False

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    ours = not kafka.is_running()  # a broker `make kafka-up` started is left running
    if ours:
        print(f"starting Kafka on {kafka.bootstrap} (data in {kafka.data_dir})", flush=True)
    else:
        print(f"using the Kafka already running on {kafka.bootstrap} (make kafka-up)", flush=True)
    try:
        kafka.start()
    except localkafka.LocalKafkaError as error:
        print(f"make run: {error}", file=sys.stderr)
        return 1
    children: list[subprocess.Popen[bytes]] = []
    labels: list[str] = []
    fake: str | None = None
    fake_ortto: str | None = None
    web = f"http://127.0.0.1:{settings.worker_web_port}"
    try:
        if stand_in:
            fake = env["AUTOPILOT_BASE_URL"] = f"http://127.0.0.1:{fake_port}"
            command = [sys.executable, "-m", "worker", "fake-autopilot", "--port", str(fake_port)]
            children.append(subprocess.Popen(command, env=env, start_new_session=True))
            labels.append("the stand-in Autopilot API")
        if ortto_stand_in:
            fake_ortto = env["ORTTO_BASE_URL"] = f"http://127.0.0.1:{fake_ortto_port}"
            command = [
                *(sys.executable, "-m", "worker", "fake-ortto"),
                *("--port", str(fake_ortto_port)),
            ]
            children.append(subprocess.Popen(command, env=env, start_new_session=True))
            labels.append("the stand-in Ortto API")
        worker = [sys.executable, "-m", "worker", "run", "--loglevel", "info"]
        children.append(subprocess.Popen(worker, env=env, start_new_session=True))
        labels.append("the worker")
        print(f"starting the worker on {web}; a block below says when it is ready", flush=True)

        def alive() -> bool:
            return not stopping and all(child.poll() is None for child in children)

        not_ready = wait_ready(web, alive)
        if not_ready and not stopping:
            print(f"\nmake run: the worker {not_ready}; its log above says why\n", flush=True)
        elif not stopping:
            default = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
            names = TopicNames.from_settings(settings)
            block = greeting(
                bootstrap=kafka.bootstrap,
                data_dir=kafka.data_dir,
                web=web,
                fake=fake,
                env=env,
                topics={
                    "segment_calls": names.segment_calls,
                    "email_events": names.email_events,
                    "segment_tracks": names.segment_tracks,
                    "autopilot_requests": names.autopilot_requests,
                    "autopilot_deliveries": names.autopilot_deliveries,
                    "ortto_requests": names.ortto_requests,
                    "ortto_deliveries": names.ortto_deliveries,
                    "dead_letters": names.dead_letters,
                },
                python=_python(),
                warehouse=(
                    f"{os.path.relpath(WAREHOUSE_FILE)} (DuckDB; the worker holds the file "
                    "while it runs: a query to try is printed when it stops)"
                    if embedded_warehouse
                    else "WAREHOUSE_URL's database"
                )
                + f", schema {schema}",
                kafka_prefix=""
                if kafka.bootstrap == default
                else f"KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap} ",
                backend=backend,
                fake_ortto=fake_ortto,
            )
            print(block, flush=True)
        while alive():
            time.sleep(0.2)
        for child, label in zip(children, labels, strict=True):
            if not stopping and child.returncode is not None:
                print(f"make run: {label} exited with status {child.returncode}", flush=True)
    finally:
        for child in reversed(children):
            _stop(child)
        if ours:
            kafka.stop()
            print("stopped", flush=True)
        else:
            print("stopped; Kafka still runs (make kafka-down stops it)", flush=True)
        if embedded_warehouse and WAREHOUSE_FILE.exists():
            print(_query_hint(schema), flush=True)
    return max((child.returncode or 0 for child in children), default=0)


if __name__ == "__main__":
    sys.exit(main())
