"""`make demo`'s reconciliation: per pipeline, in = out + skipped + dead-lettered."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import orjson

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "demo.py"


def _demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo", DEMO)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class Record(NamedTuple):
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


def _letter(pipeline: str, error: str, reason: str) -> Record:
    return Record(
        b"{}",
        (
            ("__autopilot.errors.pipeline", pipeline.encode()),
            ("__autopilot.errors.class.name", error.encode()),
            ("__autopilot.errors.exception.message", reason.encode()),
        ),
    )


def _outcome(outcome: str) -> Record:
    return Record(orjson.dumps({"outcome": outcome}))


def test_each_pipeline_balances_its_inputs_against_their_fates() -> None:
    demo = _demo()
    calls = [Record(b"{}")] * 6
    requests = [Record(b"{}")] * 3
    outputs: Any = demo.Outputs(
        calls=calls,
        events=[Record(b"{}")] * 4,
        tracks=[Record(b"{}")] * 2,
        requests=requests,
        deliveries=[_outcome("delivered")] * 2 + [_outcome("dead_lettered")],
        letters=[
            _letter("destination", "ValidationError", "Email is required for track calls"),
            _letter("source", "DecodeError", "not JSON"),
            _letter("delivery", "DeliveryRejected", "404"),
        ],
        skipped=Counter({("destination", "audience_unchanged"): 2, ("source", "test_delivery"): 0}),
        state={},
    )
    destination, source, delivery = outputs.ledgers()
    assert (destination.inputs, destination.out, destination.balance) == (6, 3, 0)
    assert destination.dead == Counter(
        {("ValidationError", "Email is required for track calls"): 1}
    )
    assert (source.inputs, source.out, source.balance) == (4, 2, 1)  # one unaccounted for
    assert (delivery.inputs, delivery.out, delivery.balance) == (3, 2, 0)
