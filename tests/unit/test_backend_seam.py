"""The destination and delivery are API-neutral: every Autopilot or Ortto path, field and header
lives in `worker/backends/<api>/`, behind the seam (`worker.backends.seam.Backend`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from worker.backends.autopilot import AutopilotBackend
from worker.backends.ortto import OrttoBackend
from worker.backends.seam import Backend, PlannedCall, memberships_prefix, qualified
from worker.settings import Settings

WORKER = Path(__file__).resolve().parents[2] / "worker"

#: What only Autopilot's API knows: its paths, its header, its body and response fields.
AUTOPILOT_WORDS = re.compile(
    r'/v1/|autopilotapikey|AutopilotHQ|contact_ids|try-in-seconds|"contacts"|\{"contact":'
    r"|boolean--|trigger/"
    r"|X-Api-Key|ap3api|person_id|str::|:cm:|merge_by|\"people\"|\"activities\""
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


def test_ortto_is_a_backend_with_what_delivery_asks() -> None:
    settings = Settings(ortto_api_key=SecretStr("k"), ortto_region="eu", ortto_rate_limit=7)
    backend: Backend = OrttoBackend.from_settings(settings)
    assert backend.name == "ortto"
    assert not backend.keeps_original_names
    assert qualified("delivery", backend) == "delivery-ortto"
    assert memberships_prefix(backend) == "ortto:"
    assert backend.integration_names == ("Ortto", "Ortto (Actions)")
    assert backend.source_integrations == ("AutopilotHQ", "Ortto")
    assert backend.auth_headers("k") == {"X-Api-Key": "k"}
    api = backend.api()
    assert (api.base_url, api.rate_limit, api.api_key_setting) == (
        "https://api.eu.ap3api.com",
        7,
        "ORTTO_API_KEY",
    )
    assert (backend.probe_path, backend.probe_body) == (
        "/v1/person/get",
        {"limit": 1, "fields": ["str::email"]},
    )
    # Ortto nests its hint; Autopilot's top-level form is read too
    nested = {"error": {"code": "rate-limit", "message": "rate limit", "try-in-seconds": 10}}
    assert backend.retry_hint(nested) == 10.0
    assert backend.retry_hint({"try-in-seconds": 2}) == 2.0
    assert backend.retry_hint({"error": {"try-in-seconds": "soon"}}) is None
    bulk = PlannedCall("POST", "/v1/person/merge", {"people": [{}, {}]}, ((0,), (1, 2)))
    answer = {
        "people": [{"person_id": "p1", "status": "merged"}, {"status": "error", "error": "x"}]
    }
    assert backend.item_ids(bulk, answer) == ["p1", None]
    assert backend.item_errors(bulk, answer) == [None, "x"]
    assert backend.item_errors(bulk, {"people": [{"person_id": "p1"}]}) == [None, None]
    assert backend.item_errors(bulk, {"people": [{"error": {"message": "m"}}, {}]}) == ["m", None]
    assert [c.groups for c in backend.split(bulk)] == [((0,),), ((1, 2),)]


def test_ortto_base_url_wins_over_the_region_and_regions_have_their_hosts() -> None:
    hosts = {
        region: OrttoBackend.from_settings(Settings(ortto_region=region)).api().base_url
        for region in ("us", "au", "eu")
    }
    assert hosts == {
        "us": "https://api.ap3api.com",
        "au": "https://api.au.ap3api.com",
        "eu": "https://api.eu.ap3api.com",
    }
    own = Settings(ortto_region="au", ortto_base_url="http://127.0.0.1:8788")
    assert OrttoBackend.from_settings(own).api().base_url == "http://127.0.0.1:8788"


def test_autopilot_keeps_its_names() -> None:
    backend = AutopilotBackend()
    assert qualified("delivery", backend) == "delivery"
    assert memberships_prefix(backend) == ""
    assert backend.item_errors(PlannedCall("POST", "/v1/contact", {}, ((0,),)), {}) == [None]
