"""Golden cases: each file `tests/golden/<pipeline>/<case>.json` is one input and its outcome.

`<pipeline>` is `source` (Autopilot event -> Segment track), `ortto` (Ortto activity webhook ->
Segment track), `destination` (Segment call -> Autopilot or Ortto requests) or `warehouse`
(Segment message -> warehouse rows); the test id is
`<pipeline>/<case>`. Every case holds:

- `description`: one line saying what the case holds and why it matters (required);
- `input`: a JSON value, sent as its compact UTF-8 JSON bytes; or `input_text`: sent as is,
  encoded with `input_encoding` (default utf-8), where a lone surrogate such as "\\udcff"
  stands for that raw byte, to write invalid UTF-8;
- `expected`: `{"output": ...}`, `{"skip": "<reason>"}` or `{"error": {"status", "message"}}`,
  the same lines `python -m worker map <pipeline>` writes.

Source and ortto cases may add `learned_user_id`; their output is `{"key", "message"}` (the
track). Ortto cases may add `config`: `activity_events` and `attribute_properties`, the
ORTTO_ACTIVITY_EVENTS and ORTTO_ATTRIBUTE_PROPERTIES objects.
Destination cases may add `backend` (`autopilot`, the default, or `ortto`: the Ortto
*destination*'s cases, `tests/golden/destination/ortto_*.json`, not to be confused with the
Ortto *source*'s in `tests/golden/ortto/`), `config` (that backend's config fields:
`AutopilotConfig`, `OrttoConfig`), `learned_email` and
`audience_state`; their output is the list of request descriptors as on the wire. Without
`learned_email` or `audience_state` a destination case runs `map_destination`, as
`map destination --backend <backend>` does; with either, the prechecked call goes through the
backend's `requests_for`.
Warehouse cases name their `topic`: `tracks` (track calls only, schema `autopilothq`) or `calls`
(every call type, schema `website`); their output is `{"schema", "id", "rows", "discarded"}`,
each row `{"table", "values"}` (`worker.warehouse.layout`; values as sent, typed at load time).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from worker.backends.autopilot import AutopilotBackend, AutopilotConfig
from worker.backends.ortto import OrttoBackend
from worker.backends.ortto import OrttoConfig as OrttoDestinationConfig
from worker.backends.seam import Backend
from worker.destination.mapping import map_destination, precheck_call
from worker.errors import InvalidInput, SkipMessage
from worker.models.autopilot_event import EmailEventType
from worker.models.ortto_activity import EMAIL_ACTIVITIES
from worker.source.mapping import map_source
from worker.source.ortto import OrttoConfig as OrttoSourceConfig
from worker.source.ortto import map_ortto
from worker.warehouse.layout import CALL_TYPES, TRACK_TYPES, lay_out

GOLDEN = Path(__file__).parents[1] / "golden"
PIPELINES = ("source", "ortto", "destination", "warehouse")
CASES = {pipeline: sorted((GOLDEN / pipeline).glob("*.json")) for pipeline in PIPELINES}
RECEIVED_AT = datetime(2026, 11, 20, 10, 15, 5, tzinfo=UTC)
INTEGRATION_VERSION = "0.0.0-golden"


def _load(path: Path) -> dict[str, Any]:
    # stdlib json: orjson refuses the lone surrogates of some destination cases
    case: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return case


def _raw(case: dict[str, Any]) -> bytes:
    if "input_text" in case:
        text: str = case["input_text"]
        return text.encode(case.get("input_encoding", "utf-8"), "surrogateescape")
    return orjson.dumps(case["input"])


def _source_output(raw: bytes, case: dict[str, Any]) -> dict[str, Any]:
    output = map_source(
        raw,
        received_at=RECEIVED_AT,
        learned_user_id=case.get("learned_user_id"),
        integration_version=INTEGRATION_VERSION,
    )
    return {"key": output.key, "message": output.message.to_dict()}


def backend_of(case: dict[str, Any]) -> Backend:
    """The backend a destination case names (Autopilot by default), with its `config`."""
    config = case.get("config", {})
    if case.get("backend", "autopilot") == "ortto":
        if "merge_by" in config:
            config = {**config, "merge_by": tuple(config["merge_by"])}
        return OrttoBackend(OrttoDestinationConfig(**config))
    assert case.get("backend", "autopilot") == "autopilot", case["backend"]
    return AutopilotBackend(AutopilotConfig(**config))


def _ortto_output(raw: bytes, case: dict[str, Any]) -> dict[str, Any]:
    config = case.get("config", {})
    output = map_ortto(
        raw,
        config=OrttoSourceConfig.build(
            config.get("activity_events"), config.get("attribute_properties")
        ),
        received_at=RECEIVED_AT,
        learned_user_id=case.get("learned_user_id"),
        integration_version=INTEGRATION_VERSION,
    )
    message = output.message.to_dict()
    assert message == output.track, "the track as written is the model's"
    return {"key": output.key, "message": message}


def _destination_output(raw: bytes, case: dict[str, Any]) -> list[dict[str, Any]]:
    backend = backend_of(case)
    if "learned_email" in case or "audience_state" in case:
        result = backend.requests_for(
            precheck_call(
                raw, backend.integration_names, source_integrations=backend.source_integrations
            ),
            learned_email=case.get("learned_email"),
            audience_state=case.get("audience_state"),
        )
    else:
        result = map_destination(raw, backend=backend)
    return [request.model_dump(mode="json", by_alias=True) for request in result.requests]


def _warehouse_output(raw: bytes, case: dict[str, Any]) -> dict[str, Any]:
    calls = case["topic"] == "calls"
    laid = lay_out(
        raw,
        schema="website" if calls else "autopilothq",
        types=CALL_TYPES if calls else TRACK_TYPES,
    )
    return {
        "schema": laid.schema,
        "id": laid.id,
        "rows": [{"table": row.table, "values": row.values} for row in laid.rows],
        "discarded": list(laid.discarded),
    }


MAPPINGS: dict[str, Callable[[bytes, dict[str, Any]], object]] = {
    "source": _source_output,
    "ortto": _ortto_output,
    "destination": _destination_output,
    "warehouse": _warehouse_output,
}


def _outcome(pipeline: str, case: dict[str, Any]) -> dict[str, Any]:
    raw = _raw(case)
    try:
        output = MAPPINGS[pipeline](raw, case)
    except SkipMessage as skip:
        return {"skip": skip.reason}
    except InvalidInput as error:
        return {"error": {"status": error.status, "message": error.message}}
    return {"output": output}


@pytest.mark.parametrize(
    ("pipeline", "path"),
    [
        pytest.param(pipeline, path, id=f"{pipeline}/{path.stem}")
        for pipeline, paths in CASES.items()
        for path in paths
    ],
)
def test_golden_case(pipeline: str, path: Path) -> None:
    case = _load(path)
    description = case.get("description")
    assert isinstance(description, str), f"{path.name}: needs a one-line description"
    assert description.strip(), f"{path.name}: the description is blank"
    assert description.splitlines() == [description], f"{path.name}: description on one line"
    assert _outcome(pipeline, case) == case["expected"]


def test_source_cases_cover_every_event_type() -> None:
    seen = {
        case["expected"]["output"]["message"]["properties"]["event"]
        for case in map(_load, CASES["source"])
        if "output" in case["expected"]
    }
    assert seen == set(EmailEventType)


def test_ortto_cases_cover_every_email_activity() -> None:
    seen = {
        case["expected"]["output"]["message"]["properties"]["field_id"]
        for case in map(_load, CASES["ortto"])
        if "output" in case["expected"] and "activity_events" not in case.get("config", {})
    }
    assert seen >= set(EMAIL_ACTIVITIES)


def test_destination_cases_exist() -> None:
    backends = [_load(path).get("backend", "autopilot") for path in CASES["destination"]]
    assert backends.count("autopilot") >= 40
    assert backends.count("ortto") >= 40


def test_warehouse_cases_cover_every_table_kind() -> None:
    tables = {
        row["table"]
        for case in map(_load, CASES["warehouse"])
        if "output" in case["expected"]
        for row in case["expected"]["output"]["rows"]
    }
    assert {"tracks", "identifies", "users", "pages", "screens", "groups", "aliases"} <= tables
