"""Who may call what: ingest and admin bearer tokens, Clary API keys for feedback.

Tokens are compared in constant time, against every configured token (no
early exit on a match); a refusal is a 401 naming the header.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from exporter.api.errors import ApiError
from exporter.config import ApiKey, Config


class Credentials:
    """The configured tokens and API keys, encoded once."""

    def __init__(self, config: Config):
        self.ingest_tokens = [t.encode() for t in config.ingest_tokens]
        self.admin_tokens = [config.admin_token.encode()] if config.admin_token else []
        self.api_keys = {key.encode(): entry for key, entry in config.api_keys.items()}

    def ingest(self, request: web.Request) -> None:
        self._bearer(request, self.ingest_tokens, "ingest")

    def admin(self, request: web.Request) -> None:
        self._bearer(request, self.admin_tokens, "admin")

    def caller(self, request: web.Request) -> ApiKey:
        """The tier and user an ``X-API-Key`` stands for."""
        key = request.headers.get("X-API-Key")
        if not key:
            raise ApiError(401, "unauthorized", "X-API-Key", "missing API key")
        entry = self.api_keys.get(key.encode("utf-8", "replace"))
        if entry is None:
            raise ApiError(401, "unauthorized", "X-API-Key", "unknown API key")
        return entry

    @staticmethod
    def _bearer(request: web.Request, tokens: list[bytes], what: str) -> None:
        challenge = {"WWW-Authenticate": 'Bearer realm="clary-exporter"'}
        header = request.headers.get("Authorization")
        if not header:
            raise ApiError(401, "unauthorized", "Authorization", f"missing bearer token ({what})", challenge)
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "unauthorized", "Authorization", "expected 'Bearer <token>'", challenge)
        given_bytes = given.strip().encode("utf-8", "replace")
        # Compare against every token, constant time each: no early exit on a match.
        matched = False
        for token in tokens:
            matched |= hmac.compare_digest(token, given_bytes)
        if not matched:
            raise ApiError(401, "unauthorized", "Authorization",
                           f"invalid {what} token" if tokens else f"no {what} token is configured", challenge)
