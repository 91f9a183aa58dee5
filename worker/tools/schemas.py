"""JSON Schemas of every topic value, generated from the pydantic models into `schemas/`.

`python -m worker schemas` writes them; `--check` (run in CI) fails when a file is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter

__all__ = ["SCHEMA_DIR", "schema_documents", "write_schemas"]

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def _models() -> dict[str, TypeAdapter[Any]]:
    from worker.models.autopilot_event import EmailEvent  # noqa: PLC0415
    from worker.models.autopilot_request import RequestDescriptor  # noqa: PLC0415
    from worker.models.delivery_result import DeliveryResult  # noqa: PLC0415
    from worker.models.segment_call import SegmentCall  # noqa: PLC0415
    from worker.models.segment_track import TrackMessage  # noqa: PLC0415

    return {
        "autopilot.email-event": TypeAdapter(EmailEvent),
        "segment.track": TypeAdapter(TrackMessage),
        "segment.call": TypeAdapter(SegmentCall),
        "autopilot.request": TypeAdapter(RequestDescriptor),
        "autopilot.delivery": TypeAdapter(DeliveryResult),
    }


def schema_documents() -> dict[str, bytes]:
    """File name -> the schema's bytes, as they must be on disk."""
    documents = {}
    for name, adapter in _models().items():
        schema = adapter.json_schema(by_alias=True)
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": name, **schema}
        documents[f"{name}.schema.json"] = (
            orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
    return documents


def write_schemas(*, check: bool = False) -> int:
    stale = []
    for filename, content in schema_documents().items():
        path = SCHEMA_DIR / filename
        if path.exists() and path.read_bytes() == content:
            continue
        stale.append(filename)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    if check and stale:
        print(f"stale schemas: {', '.join(stale)}; run `python -m worker schemas`", file=sys.stderr)
        return 1
    return 0
