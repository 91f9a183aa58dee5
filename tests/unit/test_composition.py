"""The composition root builds the features `WORKER_FEATURES` names, and nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from worker.composition import backends_for, compose, setup_warnings
from worker.settings import Settings, SettingsInvalid

KEY = SecretStr("test-key")
ORTTO_KEY = SecretStr("ortto-test-key")


def test_every_feature_runs_by_default() -> None:
    runtime = compose(Settings(autopilot_api_key=KEY))
    assert set(runtime.app.agents) == {
        "source-intake",
        "source-map",
        "destination-intake",
        "destination-map",
        "delivery",
        "replay-retry",
    }
    assert set(runtime.app.tables) == {
        "source_user_by_email",
        "destination_email_by_user",
        "destination_audiences",
    }
    assert set(runtime.breakers) == {"source", "destination", "delivery", "warehouse", "replay"}
    # one source, two input formats: its intake reads both input topics
    assert runtime.app.agents["source-intake"].channel.topics == (
        "autopilot.email-events",
        "ortto.activities",
    )
    paths = {r.resource.canonical for r in runtime.app.web.web_app.router.routes()}  # type: ignore[attr-defined]
    assert {"/autopilot/events", "/ortto/webhook"} <= paths


def test_a_delivery_only_process_runs_delivery_and_replay_alone() -> None:
    runtime = compose(Settings(worker_features="delivery", autopilot_api_key=KEY))
    assert set(runtime.app.agents) == {"delivery", "replay-retry"}
    assert set(runtime.app.tables) == set()
    assert sorted(runtime.stages) == [("delivery", "deliver"), ("replay", "retry")]


def test_a_mapping_only_process_has_no_delivery_and_no_ingest_routes() -> None:
    runtime = compose(Settings(worker_features="source,destination", autopilot_api_key=KEY))
    assert "delivery" not in runtime.app.agents
    paths = {r.resource.canonical for r in runtime.app.web.web_app.router.routes()}  # type: ignore[attr-defined]
    assert "/readyz" in paths
    assert not any(p.startswith("/v1/") for p in paths)


def test_with_both_keys_each_backend_delivers_on_its_own() -> None:
    runtime = compose(Settings(autopilot_api_key=KEY, ortto_api_key=ORTTO_KEY))
    assert {"delivery", "delivery-ortto"} <= set(runtime.app.agents)
    assert set(runtime.app.tables) == {
        "source_user_by_email",
        "destination_email_by_user",
        "destination_audiences",
    }
    assert set(runtime.breakers) == {
        "source",
        "destination",
        "delivery",
        "delivery-ortto",
        "warehouse",
        "replay",
    }
    assert {("destination", "map-autopilot"), ("destination", "map-ortto")} <= set(runtime.stages)
    assert ("delivery-ortto", "deliver") in runtime.stages


def test_which_backends_map() -> None:
    def names(**keys: SecretStr) -> list[str]:
        settings = Settings.model_validate(keys)
        return [backend.name for backend in backends_for(settings)]

    assert names() == ["autopilot"]  # as before there were two: maps, waits for a key
    assert names(autopilot_api_key=KEY) == ["autopilot"]
    assert names(ortto_api_key=ORTTO_KEY) == ["ortto"]
    assert names(autopilot_api_key=KEY, ortto_api_key=ORTTO_KEY) == ["autopilot", "ortto"]
    assert names(ortto_api_key=SecretStr("")) == ["autopilot"]


def test_an_ortto_only_worker_has_no_autopilot_delivery() -> None:
    runtime = compose(Settings(ortto_api_key=ORTTO_KEY))
    agents = set(runtime.app.agents)
    assert "delivery-ortto" in agents
    assert "delivery" not in agents
    assert "delivery" not in runtime.breakers
    assert ("destination", "map-ortto") not in runtime.stages  # one backend: no stage of its own


def test_an_unknown_feature_is_a_configuration_error() -> None:
    with pytest.raises(SettingsInvalid, match="unknown feature"):
        Settings(worker_features="source,reporting")


def test_the_warehouse_loads_only_with_a_warehouse_url(tmp_path: Path) -> None:
    without = compose(Settings(worker_features="warehouse"))
    assert set(without.app.agents) == {"replay-retry"}
    url = SecretStr(f"duckdb:///{tmp_path}/warehouse.duckdb")
    runtime = compose(Settings(worker_features="warehouse", warehouse_url=url))
    assert set(runtime.app.agents) == {"warehouse", "replay-retry"}
    assert sorted(runtime.stages) == [("replay", "retry"), ("warehouse", "load")]
    (agent,) = [a for name, a in runtime.app.agents.items() if name == "warehouse"]
    assert set(agent.channel.topics) == {
        "segment.tracks",
        "autopilot-worker.warehouse-replay",
    }


def test_importing_a_feature_registers_nothing_and_imports_no_other_feature() -> None:
    code = (
        "import sys, worker.destination.agents, worker.delivery.agents\n"
        "print(sorted(m for m in sys.modules if m.startswith(('worker.source', 'worker.ingest',"
        " 'worker.composition', 'faust.app'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "worker.source.agents" not in out
    assert "worker.ingest" not in out
    assert "worker.composition" not in out


def test_set_ups_that_drop_or_refuse_data_are_one_warning_line_each() -> None:
    bare = Settings(
        autopilot_trigger_id=None,
        autopilot_triggers={},
        autopilot_api_key=None,
        segment_write_keys=None,
        autopilot_webhook_token=None,
    )
    lines = setup_warnings(bare)
    assert len(lines) == 4
    no_trigger, no_key, no_write_keys, no_token = lines
    assert no_trigger.startswith("no journey trigger is configured (AUTOPILOT_TRIGGER_ID, ")
    assert "skipped (no_trigger_for_event)" in no_trigger
    assert no_key.startswith("AUTOPILOT_API_KEY is not set: delivery is off")
    assert no_write_keys.startswith("SEGMENT_WRITE_KEYS is not set: ")
    assert no_token.startswith("AUTOPILOT_WEBHOOK_TOKEN is not set: ")
    assert all("\n" not in line for line in lines)


def test_a_complete_set_up_and_features_not_run_warn_of_nothing() -> None:
    complete = Settings(
        autopilot_triggers='{"Signed Up": "0001"}',
        autopilot_api_key=KEY,
        segment_write_keys=KEY,
        autopilot_webhook_token=KEY,
    )
    assert setup_warnings(complete) == []
    assert setup_warnings(Settings(worker_features="source")) == []
    assert setup_warnings(Settings(worker_features="delivery", autopilot_api_key=KEY)) == []


def test_compose_logs_the_warnings(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="worker.composition"):
        compose(Settings(autopilot_api_key=KEY, autopilot_trigger_id="0001"))
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "SEGMENT_WRITE_KEYS is not set",
        "AUTOPILOT_WEBHOOK_TOKEN is not set",
    ]


def test_the_warnings_follow_the_apis_the_worker_maps_for() -> None:
    # Ortto alone: no journey trigger to miss, no Autopilot key to miss
    ortto = Settings(ortto_api_key=ORTTO_KEY, segment_write_keys=KEY, autopilot_webhook_token=KEY)
    assert setup_warnings(ortto) == []
    both = ortto.model_copy(update={"autopilot_api_key": KEY})
    assert [line.split(" (")[0] for line in setup_warnings(both)] == [
        "no journey trigger is configured"
    ]


def test_the_console_has_a_card_per_api_this_process_maps_for() -> None:
    """A mapping-only process still names each API (not run by this process)."""
    runtime = compose(
        Settings(
            worker_features="source,destination", autopilot_api_key=KEY, ortto_api_key=ORTTO_KEY
        )
    )
    router: Any = runtime.app.web.web_app.router  # type: ignore[attr-defined]
    console = next(
        r.handler.__self__ for r in router.routes() if r.resource.canonical == "/console"
    )
    views = console._deliveries({"ortto.requests": 4, "autopilot.requests": 1})
    assert [(v.backend, v.name, v.pipeline, v.runs, v.enabled, v.rate_setting) for v in views] == [
        ("Autopilot", "autopilot", "delivery", False, False, "AUTOPILOT_RATE_LIMIT"),
        ("Ortto", "ortto", "delivery-ortto", False, False, "ORTTO_RATE_LIMIT"),
    ]
    assert [v.lag for v in views] == [{"autopilot.requests": 1}, {"ortto.requests": 4}]
    assert [v.rate_limit for v in views] == [5.0, 10.0]
