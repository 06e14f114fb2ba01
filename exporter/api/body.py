"""Request bodies read under a size limit: a 413 before the limit is passed, not after."""

from __future__ import annotations

from aiohttp import web

from exporter.api.errors import ApiError


async def read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    chunks, size = [], 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def too_large(limit: int) -> ApiError:
    # Built only when raised: an ApiError renders its JSON body up front (~7 µs, on every batch otherwise).
    return ApiError(413, "body_too_large", "body", f"request body is over {limit} bytes")
