"""`make run`'s development settings and greeting per BACKEND, without starting anything (the
greeting's commands are pasted against a real broker in tests/integration/test_first_hour.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

RUN_LOCAL = Path(__file__).resolve().parents[2] / "deploy" / "run-local.py"
TOPICS = {
    "segment_calls": "segment.calls",
    "email_events": "autopilot.email-events",
    "segment_tracks": "segment.tracks",
    "autopilot_requests": "autopilot.requests",
    "autopilot_deliveries": "autopilot.deliveries",
    "ortto_requests": "ortto.requests",
    "ortto_deliveries": "ortto.deliveries",
    "dead_letters": "autopilot-worker.dead-letters",
}


def _run_local() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_local", RUN_LOCAL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_local"] = module
    spec.loader.exec_module(module)
    return module


def _greeting(backend: str, *, fake: str | None, fake_ortto: str | None) -> str:
    run_local = _run_local()
    env = run_local.dev_environment(
        {}, stand_in=fake is not None, ortto=run_local.serves(backend, "ortto")
    )
    block: str = run_local.greeting(
        bootstrap="127.0.0.1:9092",
        data_dir=Path(".cache/kafka/data"),
        web="http://127.0.0.1:6066",
        fake=fake,
        env=env,
        topics=TOPICS,
        python=".venv/bin/python",
        kafka_prefix="",
        backend=backend,
        fake_ortto=fake_ortto,
    )
    return block


def test_the_development_settings_per_backend() -> None:
    run_local = _run_local()
    autopilot = run_local.dev_environment({}, stand_in=True)
    assert autopilot["AUTOPILOT_API_KEY"] == "dev-key"
    assert autopilot["AUTOPILOT_TRIGGER_ID"] == "dev-trigger"
    assert "ORTTO_API_KEY" not in autopilot
    ortto = run_local.dev_environment({}, stand_in=False, ortto=True)
    assert ortto["ORTTO_API_KEY"] == "dev-key"
    assert "AUTOPILOT_API_KEY" not in ortto
    assert "ORTTO_API_KEY" not in run_local.dev_environment(
        {"ORTTO_API_KEY": "mine"}, stand_in=False, ortto=True
    )


def test_the_greeting_names_the_autopilot_stand_in_alone_by_default() -> None:
    block = _greeting("autopilot", fake="http://127.0.0.1:8765", fake_ortto=None)
    assert "stand-in Autopilot  http://127.0.0.1:8765  GET /_state" in block
    assert "Ortto  " not in block
    assert "out:  segment.tracks, autopilot.requests, autopilot.deliveries\n" in block
    assert "ortto.requests" not in block
    assert block.count("curl -s") == 6


def test_the_greeting_names_the_ortto_stand_in_with_backend_ortto() -> None:
    block = _greeting("ortto", fake=None, fake_ortto="http://127.0.0.1:8788")
    assert "stand-in Ortto      http://127.0.0.1:8788  GET /_state" in block
    assert "API key dev-key, an activity for every track" in block
    assert "stand-in Autopilot" not in block
    assert "out:  segment.tracks, ortto.requests, ortto.deliveries\n" in block
    assert "a person merge (ortto.requests)" in block
    assert "curl -s http://127.0.0.1:8788/_state" in block
    assert "a track needs an email or a userId" in block
    assert '"anonymousId": "a-2"' in block
    assert block.count("curl -s") == 6


def test_the_greeting_names_both_stand_ins_with_backend_both() -> None:
    block = _greeting("both", fake="http://127.0.0.1:8765", fake_ortto="http://127.0.0.1:8788")
    assert "stand-in Autopilot  http://127.0.0.1:8765" in block
    assert "stand-in Ortto      http://127.0.0.1:8788" in block
    assert (
        "out:  segment.tracks, autopilot.requests, autopilot.deliveries, ortto.requests, "
        "ortto.deliveries\n" in block
    )
    assert "a journey entry and an Ortto activity" in block
    assert block.count("curl -s") == 7  # both stand-ins' /_state


def test_the_greeting_names_a_real_ortto_api() -> None:
    block = _greeting("ortto", fake=None, fake_ortto=None)
    assert "Ortto API           the ORTTO_REGION host (ORTTO_BASE_URL, ORTTO_REGION)" in block
    assert block.count("curl -s") == 5
