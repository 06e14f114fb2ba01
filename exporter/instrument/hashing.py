"""Identifier hashing: raw keys and user ids never reach a label, a log or disk.

HMAC-SHA256 with a secret, never a bare hash: user ids and license keys have
little entropy, and a bare hash is reversed by hashing the candidates.
"""

from __future__ import annotations

import hashlib
import hmac

LICENSE_ID_LENGTH = 12


class Hasher:
    def __init__(self, secret: str | bytes):
        if not secret:
            raise ValueError("a non-empty HMAC secret is required")
        self._key = secret.encode() if isinstance(secret, str) else secret
        # A subkey for session ids (keyed BLAKE2b, a MAC in its own right): ~3x cheaper than HMAC-SHA256
        # per call, and session ids are hashed once per user action they come with.
        self._session_key = hmac.new(self._key, b"clary-session-id", hashlib.sha256).digest()

    def digest(self, value: str) -> str:
        """Full hex HMAC of an identifier, for storage and sketches."""
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()

    def session_key(self, session_id: str) -> bytes:
        """A 16-byte keyed hash of a session id: what workflows keep in memory instead of the id."""
        return hashlib.blake2b(session_id.encode(), key=self._session_key, digest_size=16).digest()

    def license_id(self, license_key: str) -> str:
        """The short, stable label value that stands for a license key."""
        return self.digest(license_key)[:LICENSE_ID_LENGTH]
