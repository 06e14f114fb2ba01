"""Identifier hashing: keyed HMAC, never a bare hash, never an empty secret."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from exporter.instrument.hashing import LICENSE_ID_LENGTH, Hasher

SECRET = "privacy-test-secret-0123456789"


def test_digest_is_hmac_sha256_not_a_bare_hash():
    value = "user-42"
    digest = Hasher(SECRET).digest(value)
    assert digest == hmac.new(SECRET.encode(), value.encode(), hashlib.sha256).hexdigest()
    assert digest != hashlib.sha256(value.encode()).hexdigest()
    assert digest != hashlib.sha256((SECRET + value).encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)


def test_license_id_is_a_short_prefix_of_the_hmac():
    hasher = Hasher(SECRET)
    key = "CLARY-PRO-0001-ABCD"
    license_id = hasher.license_id(key)
    assert LICENSE_ID_LENGTH == 12
    assert re.fullmatch(r"[0-9a-f]{12}", license_id)
    assert license_id == hasher.digest(key)[:12]
    assert license_id != hashlib.sha256(key.encode()).hexdigest()[:12]
    assert key not in license_id


def test_stable_for_the_same_secret():
    assert Hasher(SECRET).license_id("K-1") == Hasher(SECRET).license_id("K-1")
    assert Hasher(SECRET).digest("u") == Hasher(SECRET.encode()).digest("u")


def test_different_secrets_give_different_ids():
    a, b = Hasher(SECRET), Hasher(SECRET + "x")
    for value in ("K-1", "user-1", ""):
        assert a.digest(value) != b.digest(value)
        assert a.license_id(value) != b.license_id(value)


def test_different_values_give_different_ids():
    hasher = Hasher(SECRET)
    ids = {hasher.license_id(f"CLARY-{i:04d}") for i in range(2000)}
    assert len(ids) == 2000


@pytest.mark.parametrize("secret", ["", b"", None])
def test_empty_secret_rejected(secret):
    with pytest.raises(ValueError, match="non-empty HMAC secret"):
        Hasher(secret)
