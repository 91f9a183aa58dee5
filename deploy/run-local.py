"""`make run`: a local Kafka, the stand-in Autopilot API and the worker, until Ctrl-C.

The broker keeps its data in `.cache/kafka/data` between runs. The stand-in API is started
only when AUTOPILOT_BASE_URL is not set; with it, delivery goes where that variable says.
Unless WAREHOUSE_URL is set, the warehouse loader writes the tracks into the DuckDB file
`.cache/warehouse.duckdb`; DuckDB lets no other process open it while the worker writes, so a
query to try is printed once the worker stopped.
On Ctrl-C (or SIGTERM) the worker stops first (a warm shutdown that commits its offsets),
then the stand-in, then the broker.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType, ModuleType

ROOT = Path(__file__).resolve().parent.parent
FAKE_PORT = int(os.environ.get("FAKE_AUTOPILOT_PORT", "8765"))
DEV_KEY = "dev-key"
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


def main() -> int:
    problem = _settings_problem()
    if problem is not None:
        return problem
    localkafka = _load_localkafka()
    port = int(os.environ.get("LOCAL_KAFKA_PORT", "9092"))
    kafka = localkafka.LocalKafka(port=port, controller_port=port + 1)
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap)
    embedded_warehouse = not os.environ.get("WAREHOUSE_URL")
    if embedded_warehouse:
        env["WAREHOUSE_URL"] = f"duckdb://{WAREHOUSE_FILE}"
    schema = env.get("WAREHOUSE_SCHEMA") or "autopilothq"
    stopping = False

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"starting Kafka on {kafka.bootstrap} (data in {kafka.data_dir})", flush=True)
    kafka.start()
    children: list[subprocess.Popen[bytes]] = []
    try:
        if "AUTOPILOT_BASE_URL" not in os.environ:
            env.setdefault("AUTOPILOT_API_KEY", DEV_KEY)
            env["AUTOPILOT_BASE_URL"] = f"http://127.0.0.1:{FAKE_PORT}"
            fake = [sys.executable, "-m", "worker", "fake-autopilot", "--port", str(FAKE_PORT)]
            children.append(subprocess.Popen(fake, env=env, start_new_session=True))
            print(f"stand-in Autopilot API on {env['AUTOPILOT_BASE_URL']}", flush=True)
        worker = [sys.executable, "-m", "worker", "run", "--loglevel", "info"]
        children.append(subprocess.Popen(worker, env=env, start_new_session=True))
        if embedded_warehouse:
            print(
                f"warehouse loader: tracks into {os.path.relpath(WAREHOUSE_FILE)} (DuckDB; the "
                "worker holds the file while it runs: a query to try is printed when it stops)",
                flush=True,
            )
        print("worker running; Ctrl-C stops it, then the broker", flush=True)
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        for child in reversed(children):
            _stop(child)
        kafka.stop()
        print("stopped", flush=True)
        if embedded_warehouse and WAREHOUSE_FILE.exists():
            print(_query_hint(schema), flush=True)
    return max((child.returncode or 0 for child in children), default=0)


if __name__ == "__main__":
    sys.exit(main())
