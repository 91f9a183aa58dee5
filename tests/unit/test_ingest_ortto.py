"""POST /ortto/webhook with Kafka replaced by a fake sender: the token, what is written (each
activity's original bytes, keyed by lowercased email), Ortto's test deliveries, the errors.

The real worker and broker behind the route are in tests/integration/test_ortto_source.py.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict
from pydantic import SecretStr

from tests.unit.test_ingest_routes import FakeSender
from worker.ingest import routes
from worker.ingest.auth import check_ortto_token
from worker.ingest.ortto_webhook import is_test_webhook, ortto_records
from worker.ingest.problems import Rejected, Unavailable
from worker.settings import Settings
from worker.topics import TopicNames

TOKEN = "ort-unit-2468"
SETTINGS = Settings(ortto_webhook_token=SecretStr(TOKEN), ingest_kafka_timeout_s=0.2)
topic_names = TopicNames.from_settings(SETTINGS)
TOPIC = topic_names.ortto_activities


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _activity(field_id: str = "act::o", email: str = "Abhi@Example.com") -> dict[str, Any]:
    return {
        "id": f"d-{field_id}",
        "time": "2023-10-03T04:11:24.25726779Z",
        "webhook_id": "651b8aec8002153e16319fd3",
        "activity": {"id": "a-1", "field_id": field_id, "attr": {"str::is": "API"}},
        "contact": {"contact_id": "c-1", "email": email},
    }


# --- the records ------------------------------------------------------------------------------


def test_one_activity_is_one_record_of_its_bytes_keyed_by_lowercased_email() -> None:
    data = b'\n {"id": "x",  "contact": {"email": "Abhi@Example.COM"}, "n": 1.50} \r\n'
    delivery = ortto_records(data, orjson.loads(data), topic=TOPIC)
    [record] = delivery.records
    assert (record.topic, record.key) == (TOPIC, b"abhi@example.com")
    assert record.value == b'{"id": "x",  "contact": {"email": "Abhi@Example.COM"}, "n": 1.50}'
    assert delivery.test_webhooks == []


def test_an_array_is_split_into_its_elements_bytes_in_order_tests_left_out() -> None:
    elements = [
        b'{"id":"1","contact":{"email":"a@x.io"},"s":"caf\\u00e9"}',
        b'{ "id" : "t", "webhook_id": "w-9", "activity": {"field_id": "act::test_webhook"} }',
        b"[1, 2]",
        b'{"id":"3"}',
        b"null",
    ]
    data = b"[ " + b" ,\n".join(elements) + b" ]"
    delivery = ortto_records(data, orjson.loads(data), topic=TOPIC)
    assert [(r.key, r.value) for r in delivery.records] == [
        (b"a@x.io", elements[0]),
        (None, elements[2]),
        (None, elements[3]),
        (None, elements[4]),
    ]
    assert delivery.test_webhooks == ["w-9"]


@pytest.mark.parametrize(
    ("element", "test"),
    [
        ({"activity": {"field_id": "act::test_webhook"}}, True),
        ({"activity": {"field_id": "act::o"}}, False),
        ({"activity": "act::test_webhook"}, False),
        ({"field_id": "act::test_webhook"}, False),
        ("act::test_webhook", False),
    ],
)
def test_is_test_webhook(element: object, test: bool) -> None:
    assert is_test_webhook(element) is test


# --- the token --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Ortto-Token": TOKEN},
        {"x-ortto-token": TOKEN},
        {"Authorization": f"Bearer {TOKEN}"},
        _basic("ortto", TOKEN),
        _basic("", TOKEN),
        _basic("any user at all", TOKEN),
        {"X-Ortto-Token": TOKEN, "Authorization": "Bearer wrong"},  # the header decides
    ],
)
def test_the_token_is_accepted(headers: dict[str, str]) -> None:
    check_ortto_token(CIMultiDict(headers), SecretStr(TOKEN))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Ortto-Token": ""},
        {"X-Ortto-Token": "wrong", "Authorization": f"Bearer {TOKEN}"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer"},
        _basic(TOKEN, ""),  # the token as the user name: the password is what is checked
        _basic("ortto", TOKEN[:-1]),
        {"Authorization": "Basic !!!"},
        {"X-Autopilot-Token": TOKEN},
    ],
)
def test_a_missing_or_wrong_token_is_401_never_410(headers: dict[str, str]) -> None:
    with pytest.raises(Rejected) as caught:
        check_ortto_token(CIMultiDict(headers), SecretStr(TOKEN))
    assert caught.value.status == 401
    assert TOKEN not in caught.value.body().decode()


@pytest.mark.parametrize("token", [None, SecretStr("")])
def test_without_a_token_configured_it_is_503(token: SecretStr | None) -> None:
    with pytest.raises(Unavailable) as caught:
        check_ortto_token(CIMultiDict({"X-Ortto-Token": "x"}), token)
    assert caught.value.code == "webhook_not_configured"
    assert "ORTTO_WEBHOOK_TOKEN" in caught.value.message


# --- the route --------------------------------------------------------------------------------


@pytest.fixture
def sender() -> FakeSender:
    return FakeSender()


@pytest.fixture
def ingest(sender: FakeSender) -> routes.Ingest:
    return routes.Ingest(SETTINGS, topic_names, sender)


@pytest.fixture
async def client(
    ingest: routes.Ingest,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    application = web.Application()
    ingest.mount(application)
    async with TestClient(TestServer(application)) as test_client:
        yield test_client


async def _post(
    client: TestClient[web.Request, web.Application],
    data: bytes,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    headers = {"X-Ortto-Token": TOKEN} if headers is None else headers
    async with client.post("/ortto/webhook", data=data, headers=headers) as response:
        return response.status, orjson.loads(await response.read())


async def test_an_activity_is_stored_then_200(client: Any, sender: FakeSender) -> None:
    data = orjson.dumps(_activity())
    status, answer = await _post(client, data, _basic("ortto", TOKEN))
    assert (status, answer) == (200, {"success": True})
    assert [(r.topic, r.key, r.value) for r in sender.sent] == [(TOPIC, b"abhi@example.com", data)]


async def test_a_gzip_array_is_stored_element_by_element(client: Any, sender: FakeSender) -> None:
    data = orjson.dumps([_activity(), _activity("act::c", "b@x.io")])
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Encoding": "gzip"}
    status, _ = await _post(client, gzip.compress(data), headers)
    assert status == 200
    assert [orjson.loads(r.value)["activity"]["field_id"] for r in sender.sent] == [
        "act::o",
        "act::c",
    ]


async def test_a_test_delivery_is_answered_counted_and_not_written(
    client: Any, sender: FakeSender, ingest: routes.Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="worker.ingest.routes"):
        status, answer = await _post(client, orjson.dumps(_activity("act::test_webhook")))
    assert (status, answer) == (200, {"success": True})
    assert sender.sent == []
    assert ingest.skipped == {("/ortto/webhook", "test_delivery"): 1}
    assert "test delivery from webhook 651b8aec8002153e16319fd3" in caplog.text
    (family,) = ingest.skipped_metrics()
    assert [(s.name, s.labels, s.value) for s in family.samples] == [
        (
            "autopilot_worker_ingest_skipped_total",
            {"path": "/ortto/webhook", "reason": "test_delivery"},
            1,
        )
    ]


def test_the_test_delivery_count_is_exported_before_the_first(ingest: routes.Ingest) -> None:
    (family,) = ingest.skipped_metrics()
    assert [s.value for s in family.samples] == [0]


async def test_what_the_source_refuses_is_still_written(client: Any, sender: FakeSender) -> None:
    """No id, no email, a tag: the route writes them; the source skips or dead-letters them."""
    data = orjson.dumps([{"activity": {"field_id": "act::o"}}, _activity("act::t"), "x"])
    status, _ = await _post(client, data)
    assert status == 200
    assert len(sender.sent) == 3


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"X-Ortto-Token": "wrong"}, 401), (_basic(TOKEN, "x"), 401)],
)
async def test_a_wrong_token_writes_nothing(
    client: Any, sender: FakeSender, headers: dict[str, str], status: int
) -> None:
    answer_status, answer = await _post(client, orjson.dumps(_activity()), headers)
    assert (answer_status, answer["code"]) == (status, "unauthorized")
    assert sender.sent == []


@pytest.mark.parametrize("data", [b"{", b"", b'{"a": 1} {"b": 2}', b"\xff"])
async def test_a_body_that_is_not_json_is_400(client: Any, sender: FakeSender, data: bytes) -> None:
    status, answer = await _post(client, data)
    assert (status, answer["code"]) == (400, "invalid_json")
    assert sender.sent == []


async def test_kafka_not_answering_is_503(client: Any, sender: FakeSender) -> None:
    sender.hang = True
    status, answer = await _post(client, orjson.dumps(_activity()))
    assert (status, answer["code"]) == (503, "kafka_timeout")


async def test_unconfigured_is_503(sender: FakeSender) -> None:
    application = web.Application()
    routes.Ingest(Settings(ortto_webhook_token=None), topic_names, sender).mount(application)
    async with TestClient(TestServer(application)) as client:
        status, answer = await _post(client, orjson.dumps(_activity()))
    assert (status, answer["code"]) == (503, "webhook_not_configured")
