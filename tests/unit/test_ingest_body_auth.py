"""Bodies (cap, gzip, JSON) and credentials (write keys, webhook token): the pure checks."""

from __future__ import annotations

import base64
import gzip

import pytest
from multidict import CIMultiDict
from pydantic import SecretStr

from worker.ingest.auth import (
    authenticate_header,
    basic_user,
    check_webhook_token,
    check_write_key,
    write_keys,
)
from worker.ingest.body import MAX_REQUEST_BYTES, decode_body, parse_json, read_capped
from worker.ingest.problems import BadRequest, Rejected, TooLarge, Unauthorized, Unavailable

KEYS = write_keys(SecretStr(" wk-one , ,wk-two,"))
TOKEN = SecretStr("tok-s3cret")


class _Stream:
    def __init__(self, data: bytes, chunk: int = 1000) -> None:
        self._parts = [data[i : i + chunk] for i in range(0, len(data), chunk)]
        self.reads = 0

    async def read(self, n: int = -1) -> bytes:
        self.reads += 1
        return self._parts.pop(0) if self._parts else b""


def _basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# bodies


async def test_read_capped_reads_up_to_the_limit() -> None:
    assert await read_capped(_Stream(b"x" * 5000), 5000) == b"x" * 5000


async def test_read_capped_stops_as_soon_as_the_limit_is_passed() -> None:
    stream = _Stream(b"x" * 100_000)
    with pytest.raises(TooLarge) as caught:
        await read_capped(stream, 5000)
    assert stream.reads == 6  # not the hundred reads the whole body takes
    assert caught.value.status == 400
    assert caught.value.code == "request_too_large"


def test_plain_body_is_left_alone() -> None:
    assert decode_body(b'{"a": 1}', "gzip") == b'{"a": 1}'  # aiohttp already undid the gzip
    assert decode_body(b'{"a": 1}', None) == b'{"a": 1}'


def test_gzip_is_undone_when_still_compressed() -> None:
    assert decode_body(gzip.compress(b'{"a": 1}'), "gzip") == b'{"a": 1}'
    assert decode_body(gzip.compress(b"[1]"), " X-GZIP ") == b"[1]"
    two_members = gzip.compress(b'{"a": ') + gzip.compress(b"1}")
    assert decode_body(two_members, "gzip") == b'{"a": 1}'


def test_gzip_bomb_is_too_large() -> None:
    bomb = gzip.compress(b" " * (MAX_REQUEST_BYTES + 1))
    assert len(bomb) < 2000
    with pytest.raises(TooLarge):
        decode_body(bomb, "gzip")
    assert len(decode_body(gzip.compress(b" " * MAX_REQUEST_BYTES), "gzip")) == MAX_REQUEST_BYTES


@pytest.mark.parametrize("data", [b"\x1f\x8bnot gzip at all", gzip.compress(b"x" * 1000)[:-12]])
def test_broken_gzip_is_400(data: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        decode_body(data, "gzip")
    assert caught.value.code == "invalid_gzip"


@pytest.mark.parametrize("data", [b"{not json", b"\xff\xfe", b"", b'{"a": 1} trailing'])
def test_invalid_json_is_400(data: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_json(data)
    assert caught.value.code == "invalid_json"
    assert data.decode(errors="replace") not in caught.value.message or not data


def test_rejection_body_is_what_segment_libraries_read() -> None:
    rejection = Unauthorized("unauthorized", "the write key is not valid")
    assert parse_json(rejection.body()) == {
        "success": False,
        "code": "unauthorized",
        "message": "the write key is not valid",
    }


# write keys


def test_write_keys_are_comma_separated() -> None:
    assert KEYS == (b"wk-one", b"wk-two")
    assert write_keys(None) == ()
    assert write_keys(SecretStr(" , ")) == ()


@pytest.mark.parametrize(
    ("header", "user"),
    [
        (None, None),
        ("Bearer abc", None),
        (_basic("wk-one"), "wk-one"),
        (_basic("wk-one", "ignored"), "wk-one"),
        ("basic " + base64.b64encode(b"wk-two:").decode(), "wk-two"),
        ("Basic !!!", ""),
        ("Basic " + base64.b64encode(b"\xff:").decode(), ""),
        ("Basic", ""),
    ],
)
def test_basic_user(header: str | None, user: str | None) -> None:
    assert basic_user(header) == user


def test_header_key_decides_before_the_body() -> None:
    assert authenticate_header(_basic("wk-two"), KEYS) is True
    assert authenticate_header(None, KEYS) is False
    assert authenticate_header("Bearer x", KEYS) is False
    with pytest.raises(Unauthorized):
        authenticate_header(_basic("wk-three"), KEYS)
    with pytest.raises(Unauthorized):
        authenticate_header("Basic %%%", KEYS)


@pytest.mark.parametrize("candidate", [None, "", 12, "wk-on", "wk-one ", "WK-ONE"])
def test_wrong_or_missing_body_key_is_401(candidate: object) -> None:
    with pytest.raises(Unauthorized) as caught:
        check_write_key(candidate, KEYS)
    assert caught.value.status == 401
    assert "wk-one" not in str(caught.value)
    assert "wk-one" not in caught.value.body().decode()


def test_no_write_keys_configured_is_503() -> None:
    with pytest.raises(Unavailable) as caught:
        authenticate_header(_basic("anything"), ())
    assert caught.value.status == 503
    assert caught.value.code == "segment_api_not_configured"
    with pytest.raises(Unavailable):
        check_write_key("anything", ())


# webhook token


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"X-Autopilot-Token": "tok-s3cret"}, {}),
        ({"x-autopilot-token": "tok-s3cret"}, {}),
        ({"Authorization": "Bearer tok-s3cret"}, {}),
        ({"authorization": "bearer  tok-s3cret "}, {}),
        ({}, {"token": "tok-s3cret"}),
    ],
)
def test_webhook_token_accepted(headers: dict[str, str], query: dict[str, str]) -> None:
    check_webhook_token(CIMultiDict(headers), query, TOKEN)


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({}, {}),
        ({"X-Autopilot-Token": "wrong"}, {"token": "tok-s3cret"}),  # the header decides
        ({"Authorization": "Bearer wrong"}, {}),
        ({"Authorization": "Basic dG9rLXMzY3JldDo="}, {}),
        ({}, {"token": ""}),
        ({}, {"token": "tok-s3cre"}),
    ],
)
def test_webhook_token_refused_with_401_never_410(
    headers: dict[str, str], query: dict[str, str]
) -> None:
    with pytest.raises(Rejected) as caught:
        check_webhook_token(CIMultiDict(headers), query, TOKEN)
    assert caught.value.status == 401
    assert "tok-s3cret" not in caught.value.body().decode()


@pytest.mark.parametrize("token", [None, SecretStr("")])
def test_webhook_without_a_token_configured_is_503(token: SecretStr | None) -> None:
    with pytest.raises(Unavailable) as caught:
        check_webhook_token(CIMultiDict({"X-Autopilot-Token": "x"}), {}, token)
    assert caught.value.code == "webhook_not_configured"
