"""`python -m worker map source|ortto|destination`: the mapping without Kafka, a line at a time.

`source` reads Autopilot email events, `ortto` Ortto's activity webhooks (one activity a line,
with ORTTO_ACTIVITY_EVENTS and ORTTO_ATTRIBUTE_PROPERTIES from the environment), `destination`
Segment calls. Each input line gives exactly one output line, in order: `{"output": ...}`,
`{"skip": reason}` or `{"error": {"status": 400, "message": ...}}`. No learned identities are
available offline.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from worker.errors import SkipMessage, WorkerError

__all__ = ["map_line", "run_map"]

Mapper = Callable[[bytes], Any]


def _source_mapper() -> Mapper:
    from worker.source.mapping import map_source  # noqa: PLC0415

    def mapper(raw: bytes) -> Any:
        return map_source(raw, received_at=datetime.now(UTC)).track

    return mapper


def _ortto_mapper() -> Mapper:
    from worker.settings import get_settings  # noqa: PLC0415
    from worker.source.ortto import OrttoConfig, map_ortto  # noqa: PLC0415

    config = OrttoConfig.from_settings(get_settings())

    def mapper(raw: bytes) -> Any:
        return map_ortto(raw, config=config, received_at=datetime.now(UTC)).track

    return mapper


def _destination_mapper() -> Mapper:
    from worker.composition import backend_for  # noqa: PLC0415
    from worker.destination.mapping import map_destination  # noqa: PLC0415
    from worker.settings import get_settings  # noqa: PLC0415

    backend = backend_for(get_settings())

    def mapper(raw: bytes) -> Any:
        descriptors = map_destination(raw, backend=backend).descriptors
        return descriptors[0] if len(descriptors) == 1 else descriptors

    return mapper


def map_line(mapper: Mapper, raw: bytes) -> dict[str, Any]:
    """The one output object for one input line."""
    try:
        return {"output": mapper(raw)}
    except SkipMessage as skip:
        return {"skip": skip.reason}
    except WorkerError as error:
        return {"error": {"status": error.status, "message": error.message}}


def run_map(pipeline: str, stdin: IO[bytes], stdout: IO[str]) -> int:
    mappers = {"source": _source_mapper, "ortto": _ortto_mapper}
    mapper = mappers.get(pipeline, _destination_mapper)()
    for line in stdin:
        raw = line.rstrip(b"\r\n")
        stdout.write(orjson.dumps(map_line(mapper, raw)).decode() + "\n")
        stdout.flush()
    return 0
