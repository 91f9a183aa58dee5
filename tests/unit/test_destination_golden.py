"""Golden cases for the destination mapping: `tests/golden/destination/<case>.json`.

A case is `{"input": <JSON>}` (sent as compact JSON) or `{"input_text": "<raw>"}` (sent as
is; a lone surrogate such as "\\udcff" stands for that raw byte, to write invalid UTF-8), with
optional `config` (DestinationConfig fields), `learned_email` and `audience_state`, and
`expected` one of `{"output": [<descriptor as on the wire>, ...]}`, `{"skip": "<reason>"}` or
`{"error": {"status": 400, "message": "..."}}`. Without memory a case runs `map_destination`,
exactly as `python -m worker map destination` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from worker.destination.mapping import (
    DestinationConfig,
    call_to_requests,
    map_destination,
    precheck_call,
)
from worker.errors import InvalidInput, SkipMessage

CASES = sorted((Path(__file__).parents[1] / "golden" / "destination").glob("*.json"))


def _outcome(case: dict[str, Any]) -> dict[str, Any]:
    if "input_text" in case:
        raw = case["input_text"].encode("utf-8", "surrogateescape")
    else:
        raw = orjson.dumps(case["input"])
    config = DestinationConfig(**case.get("config", {}))
    try:
        if "learned_email" in case or "audience_state" in case:
            result = call_to_requests(
                precheck_call(raw),
                config=config,
                learned_email=case.get("learned_email"),
                audience_state=case.get("audience_state"),
            )
        else:
            result = map_destination(raw, config=config)
    except SkipMessage as exc:
        return {"skip": exc.reason}
    except InvalidInput as exc:
        return {"error": {"status": exc.status, "message": exc.message}}
    return {"output": [r.model_dump(mode="json", by_alias=True) for r in result.requests]}


def test_cases_exist() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden(path: Path) -> None:
    case = json.loads(path.read_text())  # stdlib json: orjson refuses the lone surrogates
    assert _outcome(case) == case["expected"]
