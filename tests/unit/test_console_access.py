"""Who may see the console and replay from it: the admin token, loopback, anti-forgery tokens.

The routes are served by aiohttp's test server on loopback, on a worker that is built but not
started (no broker): every refusal happens before anything reads Kafka.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from pydantic import SecretStr

from worker.console.access import CsrfTokens, Refusal, Viewer, viewer_of, with_proof
from worker.console.routes import Console
from worker.runtime.health import Operations
from worker.runtime.stages import Runtime
from worker.settings import Settings

TOKEN = "adm-CONSOLE-4f1e9a"

Client = TestClient[web.Request, web.Application]


def _basic(password: str, user: str = "admin") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _request(headers: dict[str, str] | None = None, remote: str = "127.0.0.1") -> web.Request:
    request = make_mocked_request("GET", "/console", headers=headers or {"Host": "127.0.0.1:6066"})
    return request.clone(remote=remote)


@pytest.mark.parametrize(
    ("authorization", "how"),
    [(f"Bearer {TOKEN}", "bearer"), (_basic(TOKEN), "basic"), (_basic(TOKEN, ""), "basic")],
)
def test_the_token_as_bearer_or_as_the_basic_password_lets_a_viewer_in(
    authorization: str, how: str
) -> None:
    headers = {"Host": "console.example", "Authorization": authorization}
    assert viewer_of(_request(headers, remote="10.1.2.3"), TOKEN) == Viewer(how)


@pytest.mark.parametrize(
    "authorization",
    ["", f"Bearer {TOKEN}x", _basic("nope"), f"Basic {TOKEN}", "Basic !!!", f"Token {TOKEN}"],
)
def test_anything_else_is_asked_for_credentials_even_from_loopback(authorization: str) -> None:
    refusal = viewer_of(_request({"Host": "127.0.0.1", "Authorization": authorization}), TOKEN)
    assert isinstance(refusal, Refusal)
    assert refusal.status == 401
    assert refusal.headers()["WWW-Authenticate"].startswith("Basic realm=")


@pytest.mark.parametrize("host", ["127.0.0.1:6066", "localhost:6066", "[::1]:6066", "localhost"])
def test_without_a_token_a_loopback_client_naming_loopback_gets_in(host: str) -> None:
    assert viewer_of(_request({"Host": host}), None) == Viewer("loopback")


def test_without_a_token_other_clients_and_other_host_names_are_refused() -> None:
    remote = viewer_of(_request({"Host": "127.0.0.1:6066"}, remote="10.0.0.7"), None)
    assert isinstance(remote, Refusal)
    assert remote.status == 403
    # a page whose own name resolves to 127.0.0.1 (DNS rebinding) is not the console's origin
    rebound = viewer_of(_request({"Host": "attacker.example:6066"}), None)
    assert isinstance(rebound, Refusal)
    assert rebound.status == 403
    assert "127.0.0.1" in rebound.reason


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_an_anti_forgery_token_is_good_for_its_process_and_twelve_hours() -> None:
    clock = Clock()
    tokens = CsrfTokens(clock=clock)
    token = tokens.issue()
    assert tokens.valid(token)
    assert not CsrfTokens(clock=clock).valid(token)  # another process, another key
    issued, _, mac = token.partition(".")
    assert not tokens.valid(f"{int(issued) + 1}.{mac}")
    assert not tokens.valid("")
    assert not tokens.valid(None)
    assert not tokens.valid("garbage")
    clock.now += 12 * 3600 + 1
    assert not tokens.valid(token)


def _post(headers: dict[str, str]) -> web.Request:
    return make_mocked_request("POST", "/console/replay", headers=headers)


def test_a_replay_needs_the_pages_token_a_json_body_and_no_foreign_site() -> None:
    tokens = CsrfTokens()
    good = {"Content-Type": "application/json", "X-Console-Csrf": tokens.issue()}
    basic = Viewer("basic")
    assert with_proof(_post(good), basic, tokens) is None
    assert with_proof(_post({**good, "Sec-Fetch-Site": "same-origin"}), basic, tokens) is None
    for changed, status in [
        ({"X-Console-Csrf": ""}, 403),
        ({"X-Console-Csrf": CsrfTokens().issue()}, 403),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({"Content-Type": "text/plain"}, 415),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "same-site"}, 403),
    ]:
        refusal = with_proof(_post({**good, **changed}), basic, tokens)
        assert isinstance(refusal, Refusal), changed
        assert refusal.status == status, changed
    # loopback viewers too: any page in the operator's browser can reach loopback
    assert isinstance(
        with_proof(_post({"Content-Type": "application/json"}), Viewer("loopback"), tokens), Refusal
    )
    # a Bearer token is proof enough: a browser never sends one by itself
    assert with_proof(_post({"Content-Type": "application/json"}), Viewer("bearer"), tokens) is None


# -- the routes --------------------------------------------------------------------------------


async def _client(settings: Settings) -> AsyncIterator[Client]:
    runtime = Runtime.create(settings)
    console = Console(runtime, Operations(runtime))
    application = web.Application()
    console.mount(application)
    async with TestClient(TestServer(application, host="127.0.0.1")) as client:
        yield client


@pytest.fixture
async def guarded() -> AsyncIterator[Client]:
    async for client in _client(Settings(worker_admin_token=SecretStr(TOKEN))):
        yield client


@pytest.fixture
async def open_loopback() -> AsyncIterator[Client]:
    async for client in _client(Settings()):
        yield client


def _csrf(page: str) -> str:
    start = page.index('name="console-csrf" content="') + len('name="console-csrf" content="')
    return page[start : page.index('"', start)]


async def test_root_leads_to_the_console(open_loopback: Client) -> None:
    response = await open_loopback.get("/", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/console"


async def test_the_page_asks_a_browser_for_the_token_and_sends_no_data_without_it(
    guarded: Client,
) -> None:
    response = await guarded.get("/console")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert "<table" not in await response.text()
    ok = await guarded.get("/console", headers={"Authorization": _basic(TOKEN)})
    assert ok.status == 200
    assert ok.headers["Content-Type"].startswith("text/html")


async def test_every_answer_forbids_framing_caching_and_foreign_content(guarded: Client) -> None:
    for response in (
        await guarded.get("/console"),
        await guarded.get("/console", headers={"Authorization": f"Bearer {TOKEN}"}),
        await guarded.post("/console/replay", json={"refs": ["0@0"]}),
    ):
        headers: Any = response.headers
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Cache-Control"] == "no-store"
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "Access-Control-Allow-Origin" not in headers


async def test_the_pages_script_and_style_carry_the_answers_nonce(guarded: Client) -> None:
    response = await guarded.get("/console", headers={"Authorization": f"Bearer {TOKEN}"})
    page = await response.text()
    nonce = response.headers["Content-Security-Policy"].split("'nonce-")[1].split("'")[0]
    assert page.count(f'nonce="{nonce}"') == 2
    assert page.count("<script") == 1
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page
    assert TOKEN not in page


async def test_a_replay_with_basic_credentials_alone_is_refused(guarded: Client) -> None:
    basic = {"Authorization": _basic(TOKEN)}
    refused = await guarded.post("/console/replay", json={"refs": ["0@0"]}, headers=basic)
    assert refused.status == 403
    assert "X-Console-Csrf" in (await refused.json())["error"]
    unauthorized = await guarded.post("/console/replay", json={"refs": ["0@0"]})
    assert unauthorized.status == 401


async def test_a_replay_body_must_name_letters(guarded: Client) -> None:
    page = await (await guarded.get("/console", headers={"Authorization": _basic(TOKEN)})).text()
    headers = {"Authorization": _basic(TOKEN), "X-Console-Csrf": _csrf(page)}
    bodies: list[dict[str, object]] = [
        {},
        {"refs": []},
        {"refs": ["nope"]},
        {"refs": [1]},
        {"refs": ["0@1"] * 101},
    ]
    for body in bodies:
        response = await guarded.post("/console/replay", json=body, headers=headers)
        assert response.status == 400, body
        assert "error" in await response.json()


async def test_without_a_token_the_console_answers_loopback_by_its_loopback_name(
    open_loopback: Client,
) -> None:
    assert (await open_loopback.get("/console")).status == 200
    rebound = await open_loopback.get("/console", headers={"Host": "rebound.example"})
    assert rebound.status == 403
    # and its replays still need the page's token
    refused = await open_loopback.post("/console/replay", json={"refs": ["0@0"]})
    assert refused.status == 403
