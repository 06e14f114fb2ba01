"""Request bodies: read under a size limit, and decompressed here, by the handler, after authentication.

The server runs aiohttp with ``auto_decompress=False`` (exporter.server.connections):
aiohttp would otherwise inflate every compressed body as it arrives, on any
path and before a handler has looked at the credentials, so a 1 MB gzip of
1 GiB of zeros cost seconds of CPU, unauthenticated. Now only the endpoints
in ``DECODING`` take a ``Content-Encoding`` (gzip or deflate); their handlers
authenticate first and then call :func:`read_body`, which inflates while it
reads and stops at ``limit`` decompressed bytes or at a ``ratio``:1
expansion (413 either way). A compressed request anywhere else is refused
with 415 by the server's middleware, and its connection closed undrained.
"""

from __future__ import annotations

import zlib

from aiohttp import hdrs, web
from aiohttp.streams import StreamReader

from exporter.api.errors import ApiError
from exporter.api.openapi import PREFIX

# Routes (method, path template) whose handlers call read_body and so accept compressed bodies.
DECODING = frozenset({("POST", PREFIX + "/events"), ("POST", PREFIX + "/feedback")})
# zlib window bits per accepted Content-Encoding: gzip (16 + 15), deflate (zlib-wrapped; raw deflate is told apart).
WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}
ACCEPTED = "gzip, deflate"
# A body that inflates to at most this much is never refused for its ratio: small JSON compresses well.
RATIO_FLOOR = 64 * 1024
DEFAULT_RATIO = 100


def content_encoding(request: web.BaseRequest) -> str | None:
    """The request's Content-Encoding, lower-cased; None when absent or ``identity``."""
    value = request.headers.get(hdrs.CONTENT_ENCODING)
    if value is None:
        return None
    value = value.strip().lower()
    return None if value in ("", "identity") else value


def unsupported(encoding: str, where: str) -> ApiError:
    # The encoding is echoed only when it is one we know of: the header is the client's free text.
    named = encoding if encoding in WBITS or encoding in ("br", "zstd", "compress") else "this encoding"
    return ApiError(415, "unsupported_content_encoding", "Content-Encoding",
                    f"{named} is not accepted {where}; send {ACCEPTED} or no Content-Encoding",
                    {hdrs.ACCEPT_ENCODING: ACCEPTED})


async def read_body(request: web.Request, limit: int, ratio: int = DEFAULT_RATIO) -> bytes:
    """The body, decompressed when it says so; 413 past ``limit`` bytes (after decompression) or ``ratio``:1."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    encoding = content_encoding(request)
    try:
        if encoding is None or _inflated_by_aiohttp(request.content):
            body = await _read_plain(request.content, limit)
            if encoding is not None:  # a server run with aiohttp's own decompression (aiohttp_client in tests)
                _check_ratio(len(body), request.content.total_compressed_bytes or 0, ratio)
            return body
        if encoding not in WBITS:
            raise unsupported(encoding, "here")
        return await _read_inflated(request.content, encoding, limit, ratio)
    except (ConnectionError, web.RequestPayloadError):
        # The client went away or broke the framing mid-body (or its connection was closed
        # for the body timeout): an answer nobody may read, but never a 500 and a traceback.
        raise ApiError(400, "incomplete_body", "body", "the request body ended before it was complete") from None


def _inflated_by_aiohttp(content: StreamReader) -> bool:
    return getattr(content, "total_compressed_bytes", None) is not None


async def _read_plain(content: StreamReader, limit: int) -> bytes:
    chunks, size = [], 0
    while chunk := await content.readany():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _read_inflated(content: StreamReader, encoding: str, limit: int, ratio: int) -> bytes:
    """Inflate while reading: never more than ``limit + 1`` bytes out, whatever comes in."""
    inflater = None
    chunks: list[bytes] = []
    size = received = 0
    while data := await content.readany():
        received += len(data)
        if received > limit:
            raise too_large(limit)
        while data:
            if inflater is None:
                inflater = _inflater(encoding, data)
            elif inflater.eof:  # a gzip member ended with more input: the next member (gzip -c a b)
                if WBITS[encoding] != 31:
                    raise _malformed(encoding)
                inflater = _inflater(encoding, data)
            try:
                out = inflater.decompress(data, limit - size + 1)
            except zlib.error:
                raise _malformed(encoding) from None
            size += len(out)
            if size > limit:
                raise too_large(limit)
            _check_ratio(size, received, ratio)
            if out:
                chunks.append(out)
            data = inflater.unconsumed_tail or (inflater.unused_data if inflater.eof else b"")
    if inflater is None or not inflater.eof:
        raise _malformed(encoding)
    return b"".join(chunks)


def _inflater(encoding: str, first: bytes):
    wbits = WBITS[encoding]
    if wbits == 15 and first and first[0] & 0x0F != 8:  # deflate without the zlib header, as some clients send it
        wbits = -15
    return zlib.decompressobj(wbits)


def _check_ratio(size: int, received: int, ratio: int) -> None:
    if size > RATIO_FLOOR and size > ratio * received:
        raise ApiError(413, "compression_ratio_too_high", "body",
                       f"the body inflates more than {ratio}:1; send it uncompressed or less repetitive")


def _malformed(encoding: str) -> ApiError:
    return ApiError(400, "malformed_body", "body", f"the body is not valid {encoding} data")


def too_large(limit: int) -> ApiError:
    # Built only when raised: an ApiError renders its JSON body up front (~7 µs, on every batch otherwise).
    return ApiError(413, "body_too_large", "body", f"request body is over {limit} bytes")
