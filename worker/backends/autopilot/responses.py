"""What Autopilot's responses say beyond their status: the contact ids, and when to retry.

A contact upsert answers `{"contact_id": "..."}`, a bulk upsert `{"contact_ids": [...]}` in
body order; a 429 may carry `{"try-in-seconds": n}` (delivery reads `Retry-After` first).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from worker.backends.seam import PlannedCall

__all__ = ["PROBE_PATH", "contact_ids", "try_in_seconds"]

PROBE_PATH: Final = "/v1/contact/probe%40autopilot-worker.invalid"
"""Read while paused: a 404 or a 200 proves the key is accepted again."""


def contact_ids(call: PlannedCall, data: Mapping[str, Any]) -> list[str | None]:
    """Autopilot's contact id for each group of `call` (None where it gave none)."""
    ids = data.get("contact_ids")
    if not (isinstance(ids, list) and len(ids) == len(call.groups)):
        ids = [data.get("contact_id")] * len(call.groups)
    return [i if isinstance(i, str) else None for i in ids]


def try_in_seconds(data: Mapping[str, Any]) -> float | None:
    """The body's `try-in-seconds`, if it is a finite number (never below 0)."""
    value = data.get("try-in-seconds")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return max(0.0, float(value))
    return None
