"""`python -m worker map destination [--backend ...]`: one JSON line in, one line out, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import orjson

LINES = [
    {"type": "identify", "userId": "u-1", "messageId": "m-1",
     "traits": {"email": "Ann@Example.com", "firstName": "Ann", "plan": "pro"}},
    {"type": "track", "userId": "u-1", "messageId": "m-2", "event": "Order Completed",
     "properties": {"total": 5}, "context": {"ip": "203.0.113.9"}},
    {"type": "page", "userId": "u-1", "messageId": "m-3", "name": "Home"},
    {"type": "identify", "anonymousId": "a-1", "messageId": "m-4", "traits": {}},
]  # fmt: skip


def run_map(*args: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOPILOT_", "ORTTO_"))}
    stdin = b"\n".join(orjson.dumps(line) for line in LINES) + b"\n\n{not json\n"
    done = subprocess.run(
        [sys.executable, "-m", "worker", "map", "destination", *args],
        input=stdin,
        capture_output=True,
        env={**clean, **(env or {})},
        check=True,
    )
    return [orjson.loads(line) for line in done.stdout.splitlines()]


def test_map_destination_for_ortto_writes_one_line_per_line_each_a_one_item_body() -> None:
    out = run_map(
        "--backend", "ortto", env={"ORTTO_ACTIVITIES": '{"Order Completed": "act:cm:buy"}'}
    )

    assert len(out) == len(LINES) + 2  # the empty line and the broken one answer too
    merge, activity = out[0]["output"], out[1]["output"]
    assert (merge["path"], merge["kind"], merge["contact"]) == (
        "/v1/person/merge",
        "merge_person",
        "u-1",
    )
    assert merge["json"]["people"] == [
        {"fields": {"str::ei": "u-1", "str::email": "Ann@Example.com", "str::first": "Ann",
                    "str:cm:plan": "pro"}}
    ]  # fmt: skip
    assert activity["path"] == "/v1/activities/create"
    assert activity["json"]["activities"] == [
        {"activity_id": "act:cm:buy", "attributes": {"int:cm:total": 5},
         "fields": {"str::ei": "u-1"}, "location": {"source_ip": "203.0.113.9"}}
    ]  # fmt: skip
    assert out[2] == {"skip": "unsupported_call_page"}
    assert out[3]["error"]["status"] == 400
    assert out[3]["error"]["message"].startswith("Missing unique identifier traits")
    assert out[4]["error"]["status"] == 400
    assert out[5]["error"]["status"] == 400


def test_map_destination_is_autopilot_by_default() -> None:
    out = run_map()
    assert out[0]["output"]["path"] == "/v1/contact"
    assert out[1] == {"skip": "no_trigger_for_event"}
