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


def _letter(pipeline: str, error: str, reason: str, stage: str = "map") -> Record:
    return Record(
        b"{}",
        (
            ("__autopilot.errors.pipeline", pipeline.encode()),
            ("__autopilot.errors.stage", stage.encode()),
            ("__autopilot.errors.class.name", error.encode()),
            ("__autopilot.errors.exception.message", reason.encode()),
        ),
    )


def _outcome(outcome: str, backend: str = "autopilot") -> Record:
    return Record(orjson.dumps({"backend": backend, "outcome": outcome}))


def test_each_pipeline_balances_its_inputs_against_their_fates() -> None:
    demo = _demo()
    calls = [Record(b"{}")] * 6
    requests = [Record(b"{}")] * 3
    outputs: Any = demo.Outputs(
        calls=calls,
        events=[Record(b"{}")] * 4,
        tracks=[Record(b"{}")] * 2,
        requests={"autopilot": requests},
        deliveries={"autopilot": [_outcome("delivered")] * 2 + [_outcome("dead_lettered")]},
        letters=[
            _letter("destination", "ValidationError", "Email is required for track calls"),
            _letter("source", "DecodeError", "not JSON", stage="intake"),
            _letter("delivery", "DeliveryRejected", "404", stage="deliver"),
        ],
        skipped=Counter(
            {
                ("destination", "map", "audience_unchanged"): 2,
                ("source", "intake", "test_delivery"): 0,
            }
        ),
        states={},
    )
    destination, source, delivery = outputs.ledgers()
    assert (destination.inputs, destination.out, destination.balance) == (6, 3, 0)
    assert destination.dead == Counter(
        {("ValidationError", "Email is required for track calls"): 1}
    )
    assert (source.inputs, source.out, source.balance) == (4, 2, 1)  # one unaccounted for
    assert (delivery.inputs, delivery.out, delivery.balance) == (3, 2, 0)


def test_with_two_backends_the_destination_and_delivery_balance_per_api() -> None:
    """A call refused by both is one failure counted for each API; one that only Ortto refused
    (destination/map-ortto, beside Autopilot's request) counts for Ortto alone."""
    demo = _demo()
    outputs: Any = demo.Outputs(
        calls=[Record(b"{}")] * 5,
        events=[],
        tracks=[],
        # call 1: both; call 2: both; call 3: Autopilot only (Ortto refused it beside);
        # call 4: neither (refused by both: one dead letter); call 5: skipped by both
        requests={"autopilot": [Record(b"{}")] * 3, "ortto": [Record(b"{}")] * 2},
        deliveries={
            "autopilot": [_outcome("delivered")] * 3,
            "ortto": [_outcome("delivered", "ortto"), _outcome("dead_lettered", "ortto")],
        },
        letters=[
            _letter("destination", "ValidationError", "Ortto: x", stage="map-ortto"),
            _letter("destination", "ValidationError", "Autopilot: y; Ortto: z", stage="intake"),
            _letter("delivery-ortto", "DeliveryRejected", "400", stage="deliver"),
        ],
        skipped=Counter({("destination", "map", "integration_disabled"): 1}),
        states={},
    )
    autopilot, ortto, source, autopilot_delivery, ortto_delivery = outputs.ledgers()
    assert (autopilot.name, ortto.name) == ("destination (Autopilot)", "destination (Ortto)")
    assert (autopilot.inputs, autopilot.out, autopilot.dead.total(), autopilot.balance) == (
        5,
        3,
        1,
        0,
    )
    assert (ortto.inputs, ortto.out, ortto.dead.total(), ortto.balance) == (5, 2, 2, 0)
    assert (source.inputs, source.balance) == (0, 0)
    assert (autopilot_delivery.name, autopilot_delivery.balance) == ("delivery", 0)
    assert (ortto_delivery.name, ortto_delivery.inputs, ortto_delivery.out) == (
        "delivery-ortto",
        2,
        1,
    )
    assert ortto_delivery.balance == 0
