"""TLS and basic auth for the exporter, configured like Prometheus exporters.

``clary-exporter --web.config.file web.yml`` (or ``CLARY_WEB_CONFIG_FILE``)
reads the file format of the Prometheus exporter-toolkit, so one file and
one set of habits serve node_exporter and this exporter alike::

    tls_server_config:
      cert_file: server.crt          # relative paths: to this file's directory
      key_file: server.key
      # client_auth_type: RequireAndVerifyClientCert   # mutual TLS (needs client_ca_file)
      # client_ca_file: clients-ca.crt
      # min_version: TLS12           # TLS12 (default) or TLS13
    http_server_config:
      headers:                       # added to every response (exporter-toolkit's five)
        Strict-Transport-Security: max-age=31536000
    basic_auth_users:                # user: bcrypt hash, cost >= 10 (htpasswd -nBC 10 "" | tr -d ':\\n')
      prometheus: $2y$10$...

The file is checked at start as exporter-toolkit checks it, and stricter
where a mistake would only show later: only the security headers
exporter-toolkit allows (:data:`EXTRA_HEADERS`), with values free of control
characters (a CR/LF accepted here would break every response); bcrypt cost
at least 10 and no hash of the empty password; every client-certificate mode
needs ``client_ca_file`` (Python's TLS verifies any client certificate it
asks for, so ``RequestClientCert``/``RequireAnyClientCert`` act as
``VerifyClientCertIfGiven``/``RequireAndVerifyClientCert``) and a CA file
needs a client-certificate mode; each missing file is named by its field.
Any failure is one line and exit 2.

What basic auth covers: ``/metrics`` and the landing page. Open on purpose:
``/healthz`` and ``/readyz`` (liveness/readiness probes carry no
credentials; they reveal nothing but "ok"), and the two APIs that have their
own credentials in the same headers: ``/api/`` (bearer tokens in
``Authorization``) and ``/demo/`` (API keys). TLS covers every path.

Passwords are checked with bcrypt off the event loop (a check costs tens of
milliseconds by design); results are cached per (user, password, hash) in
memory, keyed by a SHA-256 digest, never the password, so a scrape every
15 s costs one bcrypt check in total. An unknown user is checked against a
dummy hash, so timing does not reveal which users exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import ssl
from collections import OrderedDict
from pathlib import Path
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from exporter.config import ConfigError
from exporter.yamlfile import read_mapping

ENV = "CLARY_WEB_CONFIG_FILE"
REALM = "clary-exporter"
# Paths basic auth leaves open (see the module docstring).
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
OWN_AUTH_PREFIXES = ("/api/", "/demo/")
CACHE_SIZE = 1024
_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}\Z")
MIN_BCRYPT_COST = 10
# The response headers a web config may set and, where the header is an enumeration, the
# values allowed: exporter-toolkit's list (web/handler.go), spelled as there, so one file
# serves node_exporter and this exporter alike.
EXTRA_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}
# RFC 7230 field-value characters we accept: visible ASCII, space and tab.
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*\Z")
# client_auth_type -> whether a client certificate is required (every mode verifies it).
CLIENT_CERT_MODES = {"RequestClientCert": False, "VerifyClientCertIfGiven": False,
                     "RequireAnyClientCert": True, "RequireAndVerifyClientCert": True}


def _short(text: str) -> str:
    """A value quoted for a one-line message: escaped, at most ~60 characters."""
    quoted = repr(text)
    return quoted if len(quoted) <= 60 else quoted[:57] + "..."


class WebConfigError(ConfigError):
    """A problem with the web config file, reported as one line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSServerConfig(_Strict):
    cert_file: Path
    key_file: Path
    client_auth_type: Literal[
        "NoClientCert", "RequestClientCert", "VerifyClientCertIfGiven", "RequireAnyClientCert",
        "RequireAndVerifyClientCert"
    ] = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: Literal["TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS12", "TLS13"] = "TLS13"

    @model_validator(mode="after")
    def _client_ca(self) -> TLSServerConfig:
        mode = self.client_auth_type
        if mode in CLIENT_CERT_MODES and self.client_ca_file is None:
            raise ValueError(f"client_auth_type {mode} needs client_ca_file (the CA that client certificates "
                             "are verified against)")
        if mode == "NoClientCert" and self.client_ca_file is not None:
            raise ValueError("client_ca_file is set but client_auth_type is NoClientCert: set "
                             "RequireAndVerifyClientCert (or VerifyClientCertIfGiven), or drop client_ca_file")
        if self.min_version == "TLS13" and self.max_version == "TLS12":
            raise ValueError("min_version is above max_version")
        return self


class HTTPServerConfig(_Strict):
    headers: dict[str, str] = Field(default_factory=dict)
    http2: bool = True  # accepted for compatibility; aiohttp serves HTTP/1.1

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            allowed = EXTRA_HEADERS.get(name)
            if allowed is None:
                raise ValueError(f"header {name!r} cannot be configured; allowed (as in exporter-toolkit): "
                                 + ", ".join(EXTRA_HEADERS))
            if not _HEADER_VALUE.match(text):
                raise ValueError(f"header {name}: value {_short(text)} has a control or non-ASCII character "
                                 "(CR, LF, NUL, ...)")
            if allowed and text not in allowed:
                raise ValueError(f"header {name}: value {_short(text)} is not one of " + ", ".join(allowed))
        return value


class WebConfig(_Strict):
    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = HTTPServerConfig()
    basic_auth_users: dict[str, str] = Field(default_factory=dict)

    @field_validator("basic_auth_users")
    @classmethod
    def _hashes(cls, value: dict[str, str]) -> dict[str, str]:
        for user, hashed in value.items():
            if not user or ":" in user or not _HEADER_VALUE.match(user):
                raise ValueError(f"user name {user!r} must be non-empty, ASCII, without ':' or control characters")
            match = _BCRYPT.match(hashed)
            if match is None:
                raise ValueError(f"basic_auth_users.{user}: expected a bcrypt hash ($2y$..., 60 characters), "
                                 "not a plain password")
            cost = int(match.group(1))
            if not MIN_BCRYPT_COST <= cost <= 31:
                raise ValueError(f"basic_auth_users.{user}: bcrypt cost {cost} is outside {MIN_BCRYPT_COST}..31 "
                                 f"(make the hash with htpasswd -nBC {MIN_BCRYPT_COST})")
        return value

    @property
    def tls(self) -> bool:
        return self.tls_server_config is not None


def _resolve(base: Path, path: Path | None) -> Path | None:
    if path is None:
        return None
    return path if path.is_absolute() else base / path


def _check_files(tls: TLSServerConfig) -> None:
    """Each file the TLS config names exists and is readable; a failure names its field and path."""
    for field in ("cert_file", "key_file", "client_ca_file"):
        path = getattr(tls, field)
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except FileNotFoundError:
            raise WebConfigError(f"tls_server_config.{field}: {path}: no such file") from None
        except IsADirectoryError:
            raise WebConfigError(f"tls_server_config.{field}: {path}: is a directory, not a file") from None
        except OSError as exc:
            raise WebConfigError(f"tls_server_config.{field}: {path}: {exc.strerror or exc}") from None


def _check_passwords(users: dict[str, str]) -> None:
    """Refuse a hash of the empty password: anyone could scrape with the user name alone."""
    bcrypt = _bcrypt()
    for user, hashed in users.items():
        try:
            empty = bcrypt.checkpw(b"", hashed.encode())
        except ValueError:
            raise WebConfigError(f"basic_auth_users.{user}: not a valid bcrypt hash") from None
        if empty:
            raise WebConfigError(f"basic_auth_users.{user}: the hash is of the empty password")


def load(path: str | Path, *, check_passwords: bool = True) -> WebConfig:
    """Read and validate the file; paths inside become absolute (relative to it).

    Checks the files it names and the passwords (one bcrypt check per user,
    ~50 ms each at cost 10), so every mistake is reported at start as one
    line. ``check_passwords=False`` is for readers that only need the TLS
    setting (the container healthcheck, every few seconds).
    """
    path = Path(path)
    data = read_mapping(path, "web config file", WebConfigError)
    try:
        config = WebConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise WebConfigError(f"web config file {path}: {where}: {first['msg']}") from None
    tls = config.tls_server_config
    if tls is not None:
        base = path.resolve().parent
        tls = tls.model_copy(update={
            "cert_file": _resolve(base, tls.cert_file),
            "key_file": _resolve(base, tls.key_file),
            "client_ca_file": _resolve(base, tls.client_ca_file),
        })
        config = config.model_copy(update={"tls_server_config": tls})
    try:
        if tls is not None:
            _check_files(tls)
        if check_passwords and config.basic_auth_users:  # also fails without bcrypt at start-up, not at the first request
            _check_passwords(config.basic_auth_users)
    except WebConfigError as exc:
        raise WebConfigError(f"web config file {path}: {exc}") from None
    return config


def ssl_context(config: WebConfig) -> ssl.SSLContext | None:
    """The server-side SSLContext for aiohttp's TCPSite, or None without TLS."""
    tls = config.tls_server_config
    if tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
    context.minimum_version = versions[tls.min_version]
    context.maximum_version = versions[tls.max_version]
    _check_files(tls)  # ssl's own FileNotFoundError does not say which file
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise WebConfigError(f"tls_server_config: cannot load cert_file {tls.cert_file} with key_file "
                             f"{tls.key_file}: {exc}") from None
    required = CLIENT_CERT_MODES.get(tls.client_auth_type)
    if required is not None:  # the model guarantees client_ca_file
        context.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise WebConfigError(f"tls_server_config.client_ca_file: {tls.client_ca_file}: {exc}") from None
    return context


def _bcrypt():
    try:
        import bcrypt
    except ImportError:
        raise WebConfigError("basic_auth_users needs the bcrypt package: pip install 'clary-monitoring[deploy]'") \
            from None
    return bcrypt


class BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes, with a bounded cache."""

    def __init__(self, users: dict[str, str]):
        self._bcrypt = _bcrypt()
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        # Same cost as real hashes, so an unknown user takes as long as a known one.
        cost = next(iter(self._users.values()))[4:6].decode() if self._users else "10"
        self._dummy = self._bcrypt.hashpw(b"clary-dummy-password", self._bcrypt.gensalt(int(cost)))
        self._cache: OrderedDict[bytes, bool] = OrderedDict()

    @staticmethod
    def credentials(header: str | None) -> tuple[str, str] | None:
        if not header:
            return None
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        return (user, password) if sep else None

    def _check(self, user: str, password: str) -> bool:
        hashed = self._users.get(user)
        known = hashed is not None
        hashed = hashed if known else self._dummy
        key = hashlib.sha256(b"\0".join((user.encode(), password.encode(), hashed))).digest()
        cached = self._cache.get(key)
        if cached is None:
            cached = self._bcrypt.checkpw(password.encode(), hashed) and known
            self._cache[key] = cached
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return hmac.compare_digest(b"\1" if cached else b"\0", b"\1")

    async def check(self, header: str | None) -> str | None:
        """The authenticated user, or None."""
        creds = self.credentials(header)
        if creds is None:
            return None
        user, password = creds
        ok = await asyncio.to_thread(self._check, user, password)
        return user if ok else None


def needs_auth(path: str) -> bool:
    return path not in OPEN_PATHS and not path.startswith(OWN_AUTH_PREFIXES)


def middlewares(config: WebConfig) -> list:
    """aiohttp middlewares for the config: response headers, then basic auth."""
    result = []
    headers = dict(config.http_server_config.headers)
    if headers:
        @web.middleware
        async def add_headers(request: web.Request, handler):
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                exc.headers.update(headers)
                raise
            response.headers.update(headers)
            return response

        result.append(add_headers)
    if config.basic_auth_users:
        auth = BasicAuth(config.basic_auth_users)
        challenge = {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}

        @web.middleware
        async def basic_auth(request: web.Request, handler):
            if needs_auth(request.path) and await auth.check(request.headers.get("Authorization")) is None:
                return web.json_response(
                    {"error": "unauthorized", "message": "valid basic auth credentials are required"},
                    status=401, headers=challenge,
                )
            return await handler(request)

        result.append(basic_auth)
    return result
