"""The destination and delivery are API-neutral: every Autopilot path, field and header lives in
`worker/backends/autopilot/`, behind the seam (`worker.backends.seam.Backend`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from worker.backends.autopilot import AutopilotBackend
from worker.backends.seam import Backend, PlannedCall
from worker.settings import Settings

WORKER = Path(__file__).resolve().parents[2] / "worker"

#: What only Autopilot's API knows: its paths, its header, its body and response fields.
AUTOPILOT_WORDS = re.compile(
    r'/v1/|autopilotapikey|AutopilotHQ|contact_ids|try-in-seconds|"contacts"|\{"contact":'
    r"|boolean--|trigger/"
)


@pytest.mark.parametrize("feature", ["destination", "delivery"])
def test_the_feature_names_no_autopilot_path_field_or_header(feature: str) -> None:
    found = [
        f"{path.relative_to(WORKER)}:{number}: {line.strip()}"
        for path in sorted((WORKER / feature).glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if AUTOPILOT_WORDS.search(line)
    ]
    assert found == []


def test_autopilot_is_a_backend_with_what_delivery_asks() -> None:
    backend: Backend = AutopilotBackend.from_settings(Settings(autopilot_rate_limit=2.5))
    assert backend.integration_names == ("AutopilotHQ",)
    assert backend.auth_headers("k") == {"autopilotapikey": "k"}
    assert backend.api().rate_limit == 2.5
    assert backend.api().api_key_setting == "AUTOPILOT_API_KEY"
    assert backend.retry_hint({"try-in-seconds": 3}) == 3.0
    assert backend.retry_hint({"try-in-seconds": "soon"}) is None
    bulk = PlannedCall("POST", "/v1/contacts", {"contacts": [{"Email": "a"}, {"Email": "b"}]},
                       ((0,), (1, 2)))  # fmt: skip
    assert backend.item_ids(bulk, {"contact_ids": ["p1", "p2"]}) == ["p1", "p2"]
    assert [c.path for c in backend.split(bulk)] == ["/v1/contact", "/v1/contact"]
    lone = PlannedCall("POST", "/v1/contact", {"contact": {"Email": "a"}}, ((0,),))
    assert backend.split(lone) == []
    assert backend.item_ids(lone, {"contact_id": "p1"}) == ["p1"]
