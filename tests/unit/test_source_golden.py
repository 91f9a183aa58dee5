"""Golden cases of the source: each file in tests/golden/source is one input and its outcome.

A case holds `input` (a JSON value, sent as its UTF-8 JSON bytes) or `input_text` (sent as is,
encoded with `input_encoding`, default utf-8), an optional `learned_user_id`, and `expected`:
`{"output": {"key", "message"}}`, `{"skip": reason}` or `{"error": {"status", "message"}}`,
the same lines `python -m worker map source` writes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from worker.errors import InvalidInput, SkipMessage
from worker.models.autopilot_event import EmailEventType
from worker.source.mapping import map_source

CASES = sorted((Path(__file__).parents[1] / "golden" / "source").glob("*.json"))
RECEIVED_AT = datetime(2026, 11, 20, 10, 15, 5, tzinfo=UTC)
INTEGRATION_VERSION = "0.0.0-golden"


def _load(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return case


def _outcome(case: dict[str, Any]) -> dict[str, Any]:
    if "input_text" in case:
        raw = case["input_text"].encode(case.get("input_encoding", "utf-8"))
    else:
        raw = orjson.dumps(case["input"])
    try:
        output = map_source(
            raw,
            received_at=RECEIVED_AT,
            learned_user_id=case.get("learned_user_id"),
            integration_version=INTEGRATION_VERSION,
        )
    except SkipMessage as skip:
        return {"skip": skip.reason}
    except InvalidInput as error:
        return {"error": {"status": error.status, "message": error.message}}
    return {"output": {"key": output.key, "message": output.message.to_dict()}}


@pytest.mark.parametrize("path", CASES, ids=lambda path: path.stem)
def test_golden_case(path: Path) -> None:
    case = _load(path)
    assert _outcome(case) == case["expected"]


def test_golden_cases_cover_every_event_type() -> None:
    seen = {
        case["expected"]["output"]["message"]["properties"]["event"]
        for case in map(_load, CASES)
        if "output" in case["expected"]
    }
    assert seen == set(EmailEventType)
