"""Request bodies: read with a cap, gzip undone with a cap, JSON decoded.

aiohttp already undoes `Content-Encoding: gzip` (and deflate) while streaming the body, so the
bytes a handler reads are usually plain; `decode_body` undoes gzip itself only when the bytes
still start with gzip's magic number (a server with auto-decompression off, or a client that
compressed twice). JSON never starts with that byte, so the check cannot misread a plain body.
Every cap counts decompressed bytes, so a small gzip bomb is refused like a large body.
"""

from __future__ import annotations

import zlib
from typing import Final, Protocol

import orjson

from worker.ingest.problems import BadRequest, TooLarge

__all__ = ["GZIP_MAGIC", "MAX_REQUEST_BYTES", "decode_body", "parse_json", "read_capped"]

MAX_REQUEST_BYTES: Final = 500 * 1024
"""Segment's limit for one request (a batch), counted after decompression."""

GZIP_MAGIC: Final = b"\x1f\x8b"
_GZIP_ENCODINGS: Final = frozenset({"gzip", "x-gzip"})
_READ_CHUNK: Final = 64 * 1024


class Readable(Protocol):
    """What `read_capped` needs of a body stream (aiohttp's `request.content` is one)."""

    async def read(self, n: int = -1) -> bytes: ...


def _too_large(limit: int) -> TooLarge:
    return TooLarge("request_too_large", f"the request body is larger than {limit} bytes")


async def read_capped(stream: Readable, limit: int = MAX_REQUEST_BYTES) -> bytes:
    """The whole body, refused with `TooLarge` as soon as it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def decode_body(
    data: bytes, content_encoding: str | None, *, limit: int = MAX_REQUEST_BYTES
) -> bytes:
    """`data` with gzip undone if it is still gzip-compressed; at most `limit` bytes out."""
    encoding = (content_encoding or "").strip().lower()
    if encoding not in _GZIP_ENCODINGS or not data.startswith(GZIP_MAGIC):
        return data
    out = bytearray()
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error:
            raise BadRequest("invalid_gzip", "the body is not valid gzip") from None
        if len(out) > limit:
            raise _too_large(limit)
        if not inflater.eof:
            raise BadRequest("invalid_gzip", "the gzip body is truncated")
        rest = inflater.unused_data  # a further gzip member, as `gzip.decompress` reads them
    return bytes(out)


def parse_json(data: bytes) -> object:
    """The decoded JSON; `BadRequest` (with no excerpt of the body) when it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BadRequest("invalid_json", "the body is not valid UTF-8 JSON") from None
