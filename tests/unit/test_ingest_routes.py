"""The HTTP surface with Kafka replaced by a fake sender: statuses, bodies, what is stored.

The handlers run in a real aiohttp server (so gzip is undone by aiohttp as in the worker);
only the sender and the settings are swapped, which is how the 503 mapping is shown for a
sender that fails or never gets its acks. The paths Segment's SDKs use (`/v1/t`, `/b`, ...)
and the JSON answers of the router's errors are shown here too; the real SDKs against a real
worker are in tests/integration/test_ingest_browser.py and test_ingest_http.py.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from worker.ingest import routes
from worker.ingest.segment_api import PATHS
from worker.pipeline.records import OutboundRecord
from worker.settings import Settings
from worker.topics import TopicNames

KEY = "wk-unit-0123"
TOKEN = "tok-unit-4567"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}


class FakeSender:
    def __init__(self) -> None:
        self.sent: list[OutboundRecord] = []
        self.fail: Exception | None = None
        self.hang = False

    async def send_all(self, records: Sequence[OutboundRecord]) -> None:
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail is not None:
            raise self.fail
        self.sent.extend(records)


SETTINGS = Settings(
    segment_write_keys=SecretStr(f"other,{KEY}"),
    autopilot_webhook_token=SecretStr(TOKEN),
    ingest_kafka_timeout_s=0.2,
)
topic_names = TopicNames.from_settings(SETTINGS)


@pytest.fixture
def sender() -> FakeSender:
    return FakeSender()


@pytest.fixture
async def client(sender: FakeSender) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    application = web.Application()
    routes.Ingest(SETTINGS, topic_names, sender).mount(application)
    application.router.add_get("/broken", _broken)  # a handler with a bug, for the 500
    async with TestClient(TestServer(application)) as test_client:
        yield test_client


async def _broken(request: web.Request) -> web.Response:
    raise KeyError("a bug")


def _stored(sender: FakeSender) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in sender.sent]


async def _post(
    client: TestClient[web.Request, web.Application],
    path: str,
    body: object = None,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    payload = data if data is not None else orjson.dumps(body)
    async with client.post(path, data=payload, headers=headers) as response:
        return response.status, orjson.loads(await response.read())


async def test_track_with_basic_auth_is_stored_then_200(client: Any, sender: FakeSender) -> None:
    status, answer = await _post(client, "/v1/track", {"userId": "u1", "event": "E"}, headers=AUTH)
    assert (status, answer) == (200, {"success": True})
    [record] = sender.sent
    assert record.topic == topic_names.segment_calls
    assert record.key == b"u1"
    [message] = _stored(sender)
    assert message["type"] == "track"
    assert message["messageId"].startswith("api-")
    assert "receivedAt" in message


async def test_body_write_key_is_accepted_and_stripped(client: Any, sender: FakeSender) -> None:
    body = {"writeKey": KEY, "batch": [{"type": "identify", "userId": "u", "writeKey": KEY}]}
    status, _ = await _post(client, "/v1/batch", body)
    assert status == 200
    assert KEY.encode() not in sender.sent[0].value


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, {"userId": "u"}),
        ({}, {"userId": "u", "writeKey": "nope"}),
        ({"Authorization": "Basic " + base64.b64encode(b"nope:").decode()}, {"writeKey": KEY}),
    ],
)
async def test_missing_or_wrong_key_is_401(
    client: Any, sender: FakeSender, headers: dict[str, str], body: object
) -> None:
    status, answer = await _post(client, "/v1/identify", body, headers=headers)
    assert status == 401
    assert answer["success"] is False
    assert answer["code"] == "unauthorized"
    assert sender.sent == []


async def test_gzip_body_is_accepted(client: Any, sender: FakeSender) -> None:
    body = gzip.compress(orjson.dumps({"batch": [{"type": "track", "userId": "g", "event": "E"}]}))
    status, _ = await _post(
        client, "/v1/batch", data=body, headers={**AUTH, "Content-Encoding": "gzip"}
    )
    assert status == 200
    assert _stored(sender)[0]["userId"] == "g"


@pytest.mark.parametrize(
    ("data", "encoding", "code"),
    [
        (b"{nope", None, "invalid_json"),
        (b"\x00\x01not gzip", "gzip", "invalid_body"),
        (b"x" * (500 * 1024 + 1), None, "request_too_large"),
        (gzip.compress(b" " * (500 * 1024 + 1)), "gzip", "request_too_large"),
        (orjson.dumps({"userId": "u", "p": "x" * 32 * 1024}), None, "message_too_large"),
        (b"[]", None, "invalid_body"),
    ],
)
async def test_bad_bodies_are_400_with_a_json_error(
    client: Any, sender: FakeSender, data: bytes, encoding: str | None, code: str
) -> None:
    headers = {**AUTH, **({"Content-Encoding": encoding} if encoding else {})}
    status, answer = await _post(client, "/v1/page", data=data, headers=headers)
    assert (status, answer["success"], answer["code"]) == (400, False, code)
    assert sender.sent == []


async def test_kafka_failure_is_503_and_nothing_claims_success(
    client: Any, sender: FakeSender
) -> None:
    sender.fail = RuntimeError("KafkaConnectionError")
    status, answer = await _post(client, "/v1/track", {"userId": "u", "event": "E"}, headers=AUTH)
    assert (status, answer["code"]) == (503, "kafka_unavailable")
    sender.fail = None
    sender.hang = True
    webhook_auth = {"X-Autopilot-Token": TOKEN}
    status, answer = await _post(client, "/autopilot/events", [{"id": "e"}], headers=webhook_auth)
    assert (status, answer["code"]) == (503, "kafka_timeout")


async def test_webhook_writes_each_event(client: Any, sender: FakeSender) -> None:
    events = [{"id": "e1", "contact": {"email": "A@x.io"}}, {"id": "e2"}]
    status, answer = await _post(client, f"/autopilot/events?token={TOKEN}", events)
    assert (status, answer) == (200, {"success": True})
    topic = topic_names.email_events
    assert [(r.topic, r.key) for r in sender.sent] == [(topic, b"a@x.io"), (topic, None)]


@pytest.mark.parametrize(
    "headers", [{}, {"X-Autopilot-Token": "wrong"}, {"Authorization": "Bearer wrong"}]
)
async def test_webhook_wrong_token_is_401(
    client: Any, sender: FakeSender, headers: dict[str, str]
) -> None:
    status, _ = await _post(client, "/autopilot/events", {"id": "e"}, headers=headers)
    assert status == 401
    assert sender.sent == []


async def test_webhook_invalid_json_is_400(client: Any) -> None:
    status, answer = await _post(
        client, "/autopilot/events", data=b"{", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert (status, answer["code"]) == (400, "invalid_json")


async def test_unconfigured_endpoints_are_503(sender: FakeSender) -> None:
    application = web.Application()
    routes.Ingest(
        Settings(segment_write_keys=None, autopilot_webhook_token=None), topic_names, sender
    ).mount(application)
    async with TestClient(TestServer(application)) as client:
        await _unconfigured_endpoints_are_503(client, sender)


async def _unconfigured_endpoints_are_503(client: Any, sender: FakeSender) -> None:
    status, answer = await _post(client, "/v1/track", {"writeKey": KEY}, headers=AUTH)
    assert (status, answer["code"]) == (503, "segment_api_not_configured")
    status, answer = await _post(
        client, "/autopilot/events", {}, headers={"X-Autopilot-Token": "x"}
    )
    assert (status, answer["code"]) == (503, "webhook_not_configured")
    assert sender.sent == []


@pytest.mark.parametrize(("path", "route"), [(p, r) for p, r in PATHS.items() if r != "batch"])
async def test_every_single_call_path_stores_its_type_from_a_text_plain_body(
    client: Any, sender: FakeSender, path: str, route: str
) -> None:
    """As Analytics.js sends: `text/plain`, the write key in the body (no Basic header)."""
    body = {"writeKey": KEY, "userId": "u-short", "messageId": f"m-{route}"}
    headers = {"Content-Type": "text/plain"}
    status, answer = await _post(client, path, body, headers=headers)
    assert (status, answer) == (200, {"success": True})
    [message] = _stored(sender)
    assert (message["type"], message["messageId"]) == (route, f"m-{route}")
    assert "writeKey" not in message


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/b", "/b"])
async def test_every_batch_path_stores_each_item(
    client: Any, sender: FakeSender, path: str
) -> None:
    body = {
        "writeKey": KEY,
        "sentAt": "2026-01-01T12:00:00.000Z",
        "batch": [
            {"type": "identify", "userId": "u-b", "traits": {"email": "b@x.io"}},
            {"type": "track", "userId": "u-b", "event": "E"},
        ],
    }
    status, _ = await _post(client, path, body, headers={"Content-Type": "text/plain"})
    assert status == 200
    assert [m["type"] for m in _stored(sender)] == ["identify", "track"]


@pytest.mark.parametrize("path", ["/v1/t", "/v1/b", "/b", "/v1/identify"])
async def test_every_segment_path_answers_a_cors_preflight(client: Any, path: str) -> None:
    headers = {
        "Origin": "https://shop.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-retry-count",
    }
    async with client.options(path, headers=headers) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        allowed = response.headers["Access-Control-Allow-Headers"].lower()
        assert {"authorization", "content-type", "x-retry-count"} <= {
            h.strip() for h in allowed.split(",")
        }


async def _error(
    client: TestClient[web.Request, web.Application], method: str, path: str
) -> tuple[int, dict[str, Any], Any]:
    async with client.request(method, path, data=b"{}") as response:
        assert response.content_type == "application/json"
        return response.status, orjson.loads(await response.read()), response.headers


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/track"), ("GET", "/v1/t"), ("PUT", "/b"), ("DELETE", "/v1/batch")],
)
async def test_a_method_a_segment_path_does_not_take_is_a_json_405(
    client: Any, method: str, path: str
) -> None:
    status, answer, headers = await _error(client, method, path)
    assert (status, answer["success"], answer["code"]) == (405, False, "method_not_allowed")
    assert path in answer["message"]
    assert set(headers["Allow"].split(",")) == {"POST", "OPTIONS"}
    assert headers["Access-Control-Allow-Origin"] == "*"


async def test_a_method_the_webhook_does_not_take_is_a_json_405_without_cors(client: Any) -> None:
    status, answer, headers = await _error(client, "GET", "/autopilot/events")
    assert (status, answer["code"]) == (405, "method_not_allowed")
    assert headers["Allow"] == "POST"
    assert "Access-Control-Allow-Origin" not in headers


@pytest.mark.parametrize(
    ("method", "path", "cors"),
    [
        ("POST", "/v1/m", True),  # Analytics.js's own metrics: not served
        ("POST", "/v1/purchase", True),
        ("OPTIONS", "/v1/nothing", True),
        ("GET", "/", False),
        ("POST", "/v2/track", False),
        ("POST", "/autopilot/events/x", False),
    ],
)
async def test_a_path_nothing_serves_is_a_json_404(
    client: Any, sender: FakeSender, method: str, path: str, cors: bool
) -> None:
    status, answer, headers = await _error(client, method, path)
    assert answer == {
        "success": False,
        "code": "not_found",
        "message": f"nothing is served at {path}",
    }
    assert status == 404
    assert ("Access-Control-Allow-Origin" in headers) is cors
    assert sender.sent == []


async def test_a_handler_failing_unexpectedly_is_a_json_500(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    status, answer, _ = await _error(client, "GET", "/broken")
    assert (status, answer["success"], answer["code"]) == (500, False, "internal_error")
    assert "a bug" not in answer["message"]  # the traceback goes to the log, not to the client
    assert any(r.exc_info and "GET /broken failed" in r.getMessage() for r in caplog.records)
