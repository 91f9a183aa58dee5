"""Mapping throughput on one core: bytes in -> JSON bytes out, against the orjson floor.

What is timed is what the map agents do per message, Kafka aside. Source: `map_source`, then
the key's bytes and `SourceOutput.to_json()`; its Ortto format the same with `map_ortto`.
Destination: `precheck_call`, the backend's `requests_for`, then each descriptor's key bytes and
`orjson.dumps(descriptor)`. The floor is
`orjson.dumps(orjson.loads(raw))` of the very same inputs, timed in the same process and
interleaved round by round with the mapping, so both see the same machine; the ratio is floor
time / mapping time (the issues' goal: at least 0.4). Time is the process's CPU time.

Two input sets:

- `run(n)`: the golden cases' valid inputs (those whose expected outcome is an output), cycled
  to `n`, each copy with its own event id / messageId and contact email, each call with its
  case's config and memory (learned email, audience state). Best of `ROUNDS` rounds.
- `measure()` (what `make bench` reports): the production-like mix of `tests.benchmarks.inputs`
  (every event type and call, a few per cent of skips and errors, caught as the agents catch
  them; for Ortto, activities as its webhook sends them, the contact's locked fields included).
  Median of `MEASURE_ROUNDS` rounds, with a breakdown by stage.

Run alone: `.venv/bin/python -m tests.benchmarks.bench_mapping` (a Markdown table of `run()`).
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from tests.benchmarks.inputs import (
    DESTINATION_BACKEND,
    ORTTO_CONFIG,
    Input,
    ortto_inputs,
)
from tests.benchmarks.inputs import (
    destination_inputs as mixed_destination_inputs,
)
from tests.benchmarks.inputs import (
    source_inputs as mixed_source_inputs,
)
from worker import __version__
from worker.backends.autopilot import AutopilotBackend, AutopilotConfig
from worker.destination.mapping import map_destination, precheck_call
from worker.errors import WorkerError
from worker.source.mapping import NATIVE, _integration, map_source
from worker.source.ortto import map_ortto, parse_ortto_activity
from worker.source.track import received_text, write_track

INTEGRATIONS = AutopilotBackend().integration_names

__all__ = ["destination_inputs", "main", "measure", "run", "source_inputs"]

ROUNDS = 5
MEASURE_INPUTS = 20_000
MEASURE_ROUNDS = 7
GOLDEN = Path(__file__).resolve().parents[1] / "golden"

Step = Callable[[bytes], object]


# ------------------------------------------------------------------ run(): the golden mix


@dataclass(frozen=True, slots=True)
class SourceInput:
    raw: bytes
    learned_user_id: str | None
    received_at: datetime


@dataclass(frozen=True, slots=True)
class DestinationInput:
    raw: bytes
    backend: AutopilotBackend
    learned_email: str | None
    audience_state: Mapping[str, bool] | None


def _valid_cases(pipeline: str) -> list[dict[str, Any]]:
    cases = []
    for path in sorted((GOLDEN / pipeline).glob("*.json")):
        case: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if "input" in case and "output" in case["expected"]:
            cases.append(case)
    return cases


def _distinct_email(email: str, n: int) -> str:
    local, _, domain = email.partition("@")
    return f"{local}.{n}@{domain}"


def source_inputs(n: int) -> list[SourceInput]:
    """`n` events: the golden valid events in turn, each copy with its own id and email, and a
    `received_at` made in advance (the clock is the agent's cost, formatting it the mapping's)."""
    cases = _valid_cases("source")
    start = datetime.now(UTC)
    inputs = []
    for i in range(n):
        case = cases[i % len(cases)]
        event = dict(case["input"])
        event["id"] = f"{event['id']}-{i}"
        contact = event["contact"]
        event["contact"] = {**contact, "email": _distinct_email(contact["email"], i)}
        received_at = start + timedelta(microseconds=137 * i)
        inputs.append(SourceInput(orjson.dumps(event), case.get("learned_user_id"), received_at))
    return inputs


def _with_distinct_email(part: Any, n: int) -> Any:
    if isinstance(part, dict) and isinstance(part.get("email"), str):
        return {**part, "email": _distinct_email(part["email"], n)}
    return part


def destination_inputs(n: int) -> list[DestinationInput]:
    """`n` calls: the golden valid calls in turn, each copy with its own messageId and email."""
    cases = _valid_cases("destination")
    inputs = []
    for i in range(n):
        case = cases[i % len(cases)]
        call = dict(case["input"])
        if "messageId" in call:
            call["messageId"] = f"{call['messageId']}-{i}"
        for part in ("traits", "properties"):
            if part in call:
                call[part] = _with_distinct_email(call[part], i)
        if isinstance(call.get("context"), dict):
            context = call["context"]
            call["context"] = {**context, "traits": _with_distinct_email(context.get("traits"), i)}
        learned = case.get("learned_email")
        inputs.append(
            DestinationInput(
                orjson.dumps(call),
                AutopilotBackend(AutopilotConfig(**case.get("config", {}))),
                _distinct_email(learned, i) if learned else None,
                case.get("audience_state"),
            )
        )
    return inputs


def _map_sources(inputs: Sequence[SourceInput]) -> None:
    for item in inputs:
        output = map_source(
            item.raw, received_at=item.received_at, learned_user_id=item.learned_user_id
        )
        output.key.encode()
        output.to_json()


def _map_destinations(inputs: Sequence[DestinationInput]) -> None:
    for item in inputs:
        result = item.backend.requests_for(
            precheck_call(item.raw, INTEGRATIONS),
            learned_email=item.learned_email,
            audience_state=item.audience_state,
        )
        for descriptor in result.descriptors:
            descriptor["contact"].encode()
            orjson.dumps(descriptor)


def _floors(raws: Sequence[bytes]) -> None:
    loads, dumps = orjson.loads, orjson.dumps
    for raw in raws:
        dumps(loads(raw))


def _cpu_seconds(step: Callable[[], None]) -> float:
    gc.collect()
    started = time.process_time()
    step()
    return time.process_time() - started


def _best(mapping: Callable[[], None], floor: Callable[[], None]) -> tuple[float, float]:
    """Best CPU seconds of the mapping and of the floor, over interleaved rounds."""
    mapping()  # warm-up: lazy imports, pydantic's and orjson's caches
    floor()
    best_mapping = best_floor = float("inf")
    for _ in range(ROUNDS):
        best_mapping = min(best_mapping, _cpu_seconds(mapping))
        best_floor = min(best_floor, _cpu_seconds(floor))
    return best_mapping, best_floor


def run(n: int = 50_000) -> dict[str, float]:
    """Events/s of each mapping and of its orjson floor on the golden mix, and their ratio
    (floor time / mapping time: the issues ask for at least 0.4)."""
    source = source_inputs(n)
    destination = destination_inputs(n)
    source_raw = [item.raw for item in source]
    destination_raw = [item.raw for item in destination]
    s_map, s_floor = _best(lambda: _map_sources(source), lambda: _floors(source_raw))
    d_map, d_floor = _best(lambda: _map_destinations(destination), lambda: _floors(destination_raw))
    return {
        "source_eps": round(n / s_map),
        "source_floor_eps": round(n / s_floor),
        "source_ratio": round(s_floor / s_map, 3),
        "destination_eps": round(n / d_map),
        "destination_floor_eps": round(n / d_floor),
        "destination_ratio": round(d_floor / d_map, 3),
    }


def main() -> None:
    figures = run()
    print("| mapping, one core, golden valid inputs | events/s | orjson floor | ratio (≥ 0.4) |")
    print("|---|---:|---:|---:|")
    for name in ("source", "destination"):
        print(
            f"| {name} | {figures[f'{name}_eps']:,.0f} | {figures[f'{name}_floor_eps']:,.0f} "
            f"| {figures[f'{name}_ratio']:.3f} |"
        )


# -------------------------------------------------------- measure(): the production-like mix


def _floor(raw: bytes) -> object:
    try:
        return orjson.dumps(orjson.loads(raw))
    except orjson.JSONDecodeError:
        return None


def _source(raw: bytes) -> object:
    try:
        output = map_source(raw, received_at=datetime.now(UTC))
    except WorkerError:
        return None
    return output.key.encode(), output.to_json()


def _ortto(raw: bytes) -> object:
    try:
        output = map_ortto(raw, config=ORTTO_CONFIG, received_at=datetime.now(UTC))
    except WorkerError:
        return None
    return output.key.encode(), output.to_json()


def _ortto_stages(values: Sequence[bytes]) -> dict[str, float]:
    """us per event in each stage, over the mapped activities."""
    now = datetime.now(UTC)
    received = received_text(now)
    events = []
    raws = []
    for raw in values:
        try:
            events.append(parse_ortto_activity(raw, ORTTO_CONFIG))
        except WorkerError:
            continue
        raws.append(raw)
    return {
        "parse (parse_ortto_activity: orjson, checks, the neutral event)": _us(
            lambda raw: parse_ortto_activity(raw, ORTTO_CONFIG), raws
        ),
        "write (write_track: the track's bytes)": _us(
            lambda event: write_track(event, None, received, __version__), events
        ),
    }


def _destination(raw: bytes) -> object:
    try:
        descriptors = map_destination(raw, backend=DESTINATION_BACKEND).descriptors
    except WorkerError:
        return None
    return [(d["contact"].encode(), orjson.dumps(d)) for d in descriptors]


def _rate(step: Step, values: Sequence[bytes]) -> float:
    """Events/s of one pass of `step` over `values`, in this process's CPU time (one core, so
    other processes on the machine do not count), garbage collection on as in production."""
    started = time.process_time()
    for raw in values:
        step(raw)
    return len(values) / (time.process_time() - started)


def _compare(step: Step, values: Sequence[bytes]) -> dict[str, float]:
    for _ in range(2):  # warm-up: imports, caches, pydantic's lazy schema bits
        _rate(step, values[:2000])
        _rate(_floor, values[:2000])
    mapped: list[float] = []
    floor: list[float] = []
    for _ in range(MEASURE_ROUNDS):
        gc.collect()
        mapped.append(_rate(step, values))
        gc.collect()
        floor.append(_rate(_floor, values))
    events_s = statistics.median(mapped)
    floor_s = statistics.median(floor)
    return {
        "events_per_s": round(events_s),
        "floor_events_per_s": round(floor_s),
        "ratio": round(events_s / floor_s, 3),
        "us_per_event": round(1e6 / events_s, 2),
        "floor_us_per_event": round(1e6 / floor_s, 2),
        "spread": round((max(mapped) - min(mapped)) / events_s, 3),
    }


def _us(step: Callable[[Any], object], items: Sequence[Any]) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for item in items:
            step(item)
        best = min(best, time.process_time() - started)
    return round(best / len(items) * 1e6, 2)


def _swallow(step: Callable[[Any], object]) -> Callable[[Any], object]:
    def safe(item: Any) -> object:
        try:
            return step(item)
        except (WorkerError, ValueError):  # pydantic's and msgspec's errors are ValueErrors
            return None

    return safe


def _source_stages(values: Sequence[bytes]) -> dict[str, float]:
    """us per event in each stage, over the valid, non-test events."""
    now = datetime.now(UTC)
    outputs = []
    raws = []
    for raw in values:
        try:
            outputs.append(map_source(raw, received_at=now))
        except WorkerError:
            continue
        raws.append(raw)
    native = NATIVE
    assert native is not None, "the native mapper is built by `make install`"
    received, integration = received_text(now), _integration(__version__)
    return {
        "native (NATIVE.map: parse, map, serialise)": _us(
            lambda raw: native.map(raw, None, received, integration), raws
        ),
        "map_source (the receipt time, the call, SourceOutput)": _us(
            lambda raw: map_source(raw, received_at=now), raws
        ),
        "serialise (to_json)": _us(lambda output: output.to_json(), outputs),
    }


def _native_share(values: Sequence[bytes]) -> float:
    """The share of the inputs the native mapper maps itself (the rest take the Python path)."""
    assert NATIVE is not None, "the native mapper is built by `make install`"
    received, integration = received_text(datetime.now(UTC)), _integration(__version__)
    taken = sum(NATIVE.map(raw, None, received, integration) is not None for raw in values)
    return round(taken / len(values), 4)


def _destination_stages(values: Sequence[bytes]) -> dict[str, float]:
    calls = []
    for raw in values:
        try:
            calls.append(precheck_call(raw, INTEGRATIONS))
        except WorkerError:
            continue
    descriptors = []
    for call in calls:
        try:
            result = DESTINATION_BACKEND.requests_for(call, learned_email=None, audience_state=None)
        except WorkerError:
            continue
        descriptors.extend(result.descriptors)

    def to_requests(call: Any) -> object:
        return DESTINATION_BACKEND.requests_for(call, learned_email=None, audience_state=None)

    return {
        "parse (precheck_call, all inputs)": _us(
            _swallow(lambda raw: precheck_call(raw, INTEGRATIONS)), values
        ),
        "map (requests_for, accepted calls)": _us(_swallow(to_requests), calls),
        "serialise (orjson.dumps)": _us(orjson.dumps, descriptors),
    }


def measure(
    source: Sequence[Input] | None = None,
    destination: Sequence[Input] | None = None,
    ortto: Sequence[Input] | None = None,
) -> dict[str, Any]:
    """The mappings against the floor on the production-like mix (`MEASURE_INPUTS` each)."""
    src = [i.value for i in (source or list(mixed_source_inputs(MEASURE_INPUTS)))]
    dst = [i.value for i in (destination or list(mixed_destination_inputs(MEASURE_INPUTS)))]
    ort = [i.value for i in (ortto or list(ortto_inputs(MEASURE_INPUTS)))]
    src, dst, ort = src[:MEASURE_INPUTS], dst[:MEASURE_INPUTS], ort[:MEASURE_INPUTS]
    return {
        "inputs": {
            "source": len(src),
            "destination": len(dst),
            "ortto": len(ort),
            "source_mean_bytes": round(statistics.mean(map(len, src))),
            "destination_mean_bytes": round(statistics.mean(map(len, dst))),
            "ortto_mean_bytes": round(statistics.mean(map(len, ort))),
        },
        "rounds": MEASURE_ROUNDS,
        "source": _compare(_source, src)
        | {"stages_us": _source_stages(src), "native_share": _native_share(src)},
        "ortto": _compare(_ortto, ort) | {"stages_us": _ortto_stages(ort)},
        "destination": _compare(_destination, dst) | {"stages_us": _destination_stages(dst)},
    }


if __name__ == "__main__":
    main()
