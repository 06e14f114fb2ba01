"""Exporter configuration: defaults < config file < CLARY_* environment < flags.

Validated with pydantic so a bad value is reported by name in one line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from exporter.catalog import ACTION, FUNNEL_STEP, configurable_labels
from exporter.collectors.registry import registered
from exporter.yamlfile import read_mapping

DEFAULT_PORT = 25279  # "CLARY" on a phone keypad; outside the crowded 9100-9999 exporter range
DEFAULT_LISTEN_ADDRESS = f"0.0.0.0:{DEFAULT_PORT}"
ENV_PREFIX = "CLARY_"
MAX_FUNNELS = 20
MAX_FUNNEL_STEPS = len(FUNNEL_STEP.values)  # step is a label with values 1..10
FUNNEL_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


class ConfigError(Exception):
    """A configuration problem, reported as one line and exit code 2."""


def parse_listen_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class ApiKey(BaseModel):
    """What an API key stands for; the key itself never reaches a label or log."""

    model_config = ConfigDict(extra="forbid")
    tier: Literal["lite", "standard", "professional"]
    user: str = Field(min_length=1, max_length=256)


SLACK_WEBHOOK_HOST = "hooks.slack.com"


class Webhook(BaseModel):
    """One receiver of urgent-feedback notifications, and the markup its message is rendered in.

    ``format`` decides how user text is escaped (exporter.api.webhook_text):
    ``slack`` (mrkdwn), ``html`` or ``json`` (plain strings). A bare URL in
    the config is ``{url: URL}``; the format then defaults to ``slack`` for
    Slack's incoming-webhook host and ``json`` for anything else.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str
    format: Literal["json", "slack", "html"]

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = {"url": value}
        if isinstance(value, dict) and "format" not in value and isinstance(value.get("url"), str):
            host = urlsplit(value["url"]).hostname
            value = {**value, "format": "slack" if host == SLACK_WEBHOOK_HOST else "json"}
        return value

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # The URL itself is not echoed: webhook URLs often embed a secret.
            raise ValueError("not an http(s) URL")
        return value


def _collectors_model() -> type[BaseModel]:
    """``collectors:`` of the config: one bool per registered collector, its default as registered."""
    fields: dict[str, Any] = {
        name: (bool, Field(entry.default_enabled, description=entry.help)) for name, entry in registered().items()}
    return create_model("Collectors", __config__=ConfigDict(extra="forbid"), **fields)


Collectors = _collectors_model()


class PrivacyConfig(BaseModel):
    """``privacy:`` of the config (docs/configuration.md#privacy)."""

    model_config = ConfigDict(extra="forbid")

    consent: Literal["opt_out", "opt_in"] = Field(
        "opt_out", description="opt_out: users are tracked unless they object; opt_in: nothing per user is kept "
                               "until their consent is recorded (POST /api/v1/users/{id}/consent)")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    listen_address: str = DEFAULT_LISTEN_ADDRESS
    demo: bool = False
    demo_duration: float = Field(0.0, ge=0, description="seconds of demo traffic; 0 = until shutdown")
    demo_rate: float = Field(20.0, gt=0, le=1000, description="demo requests per second")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    hmac_secret: str | None = Field(None, min_length=16, description="HMAC secret for identifiers")
    hmac_previous_secrets: list[str] = Field(default_factory=list, max_length=10,
                                             description="earlier HMAC secrets, still used to find stored users")
    data_dir: Path = Path("data")
    # Several replicas, one store (exporter.store.postgres, docs/scale-out.md); unset: SQLite under data_dir.
    database_url: str | None = Field(None, description="postgresql://user:password@host:port/db: the store shared "
                                     "by every replica; unset: SQLite under data_dir")
    database_pool_size: int = Field(4, ge=1, le=64, description="PostgreSQL connections per replica (store threads)")
    collectors: Collectors = Field(default_factory=Collectors)  # type: ignore[valid-type]
    allow_lists: dict[str, list[str]] = Field(default_factory=dict)
    api_keys: dict[str, ApiKey] = Field(default_factory=dict)
    # Ingestion and feedback API (exporter.api.app); see docs/api.md.
    ingest_tokens: list[str] = Field(default_factory=list, description="Bearer tokens for POST /api/v1/events")
    admin_token: str | None = Field(None, min_length=16, description="Bearer token for admin endpoints")
    retention_days: int = Field(365, ge=1, le=36500, description="days stored feedback and activity are kept")
    webhooks: list[Webhook] = Field(default_factory=list, max_length=20,
                                    description="receivers of urgent feedback: URLs or {url, format}")
    # Abuse limits of the feedback API and its notifications (exporter.api.limits); see docs/api.md.
    feedback_rate_per_minute: float = Field(10.0, ge=0, le=1_000_000,
                                            description="feedback submissions per minute per API key; 0 = no limit")
    feedback_burst: int = Field(20, ge=1, le=1_000_000, description="submissions an API key may make at once")
    urgent_notify_limit: int = Field(10, ge=1, le=10_000,
                                     description="urgent notifications per tier per urgent_notify_window_seconds")
    urgent_notify_window_seconds: int = Field(600, ge=1, le=86_400,
                                              description="window of urgent_notify_limit and of duplicate suppression")
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="request body limit")
    max_batch_items: int = Field(1000, ge=1, le=100_000, description="events per batch limit")
    opted_out_users: list[str] = Field(default_factory=list, description="user ids always treated as opted out")
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    # The HTTP server's connection limits and compressed bodies (exporter.server.connections,
    # exporter.api.body); see docs/deployment.md#slow-clients-and-connection-limits.
    header_timeout: float = Field(10.0, gt=0, le=3600, description="seconds a client has to send a request's headers")
    body_timeout: float = Field(60.0, gt=0, le=3600, description="seconds a client has to send a request's body")
    keepalive_timeout: float = Field(75.0, gt=0, le=3600, description="seconds an idle keep-alive connection is kept")
    max_connections: int = Field(1024, ge=1, le=1_000_000, description="open connections at most")
    max_compression_ratio: int = Field(100, ge=2, le=100_000,
                                       description="decompressed:compressed size of a request body at most")
    license_stale_after: int = Field(86400, ge=0, le=366 * 86400,
                                     description="seconds without a license_status event after which a license's "
                                     "expiry/usage/limit series are dropped; 0 = keep them until restart")
    # User workflows (exporter.instrument.workflows); see docs/configuration.md#funnels.
    funnels: dict[str, list[str]] = Field(default_factory=dict, description="funnel name -> its actions in order")
    workflow_session_timeout: int = Field(1800, ge=60, le=86_400,
                                          description="seconds without an action after which a session ends")
    workflow_max_sessions: int = Field(100_000, ge=1, le=10_000_000, description="live sessions tracked at once")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres") or not (parts.hostname or parts.path.strip("/")):
            # The value may hold a password: never repeat it.
            raise ValueError("expected postgresql://user:password@host:port/database")
        return value

    @field_validator("listen_address")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen_address(value)
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("allow_lists")
    @classmethod
    def _allow_lists(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        known = configurable_labels()
        for label, values in value.items():
            if label not in known:
                raise ValueError(f"unknown label {label!r}; configurable: {', '.join(sorted(known))}")
            if not values or len(values) > 200:
                raise ValueError(f"allow_lists.{label} must have 1..200 values")
        return value

    @field_validator("funnels")
    @classmethod
    def _funnels(cls, value: dict[str, list[str]], info: ValidationInfo) -> dict[str, list[str]]:
        if len(value) > MAX_FUNNELS:
            raise ValueError(f"at most {MAX_FUNNELS} funnels, got {len(value)}")
        allowed = (info.data.get("allow_lists") or {}).get(ACTION.name) or ACTION.values
        for name, steps in value.items():
            if not FUNNEL_NAME.fullmatch(name):
                raise ValueError(f"funnel name {name[:40]!r}: lowercase letters, digits and _, 1..64 characters")
            if not 2 <= len(steps) <= MAX_FUNNEL_STEPS:
                raise ValueError(f"funnel {name!r} must have 2..{MAX_FUNNEL_STEPS} steps, got {len(steps)}")
            unknown = [step for step in steps if step not in allowed]
            if unknown:
                raise ValueError(f"funnel {name!r}: {unknown[0][:40]!r} is not an allowed action "
                                 f"(allowed: {', '.join(allowed)})")
        return value

    @field_validator("ingest_tokens")
    @classmethod
    def _tokens(cls, value: list[str]) -> list[str]:
        if any(len(token) < 16 for token in value):
            raise ValueError("every ingest token must be at least 16 characters")
        return value

    @field_validator("hmac_previous_secrets")
    @classmethod
    def _previous_secrets(cls, value: list[str]) -> list[str]:
        if any(len(secret) < 16 for secret in value):
            raise ValueError("every previous HMAC secret must be at least 16 characters")
        return value

    @field_validator("webhooks")
    @classmethod
    def _webhooks(cls, value: list[Webhook]) -> list[Webhook]:
        seen: set[str] = set()
        for index, hook in enumerate(value):
            if hook.url in seen:
                raise ValueError(f"entry {index} repeats an earlier URL")
            seen.add(hook.url)
        return value

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_listen_address(self.listen_address)


# Settings that may come from CLARY_<NAME> (flags use the same names).
ENV_SETTINGS = ("listen_address", "demo", "demo_duration", "log_level", "log_format", "hmac_secret", "data_dir", "config",
                "hmac_previous_secrets",
                "ingest_tokens", "admin_token", "retention_days", "webhooks", "max_body_bytes", "max_batch_items",
                "opted_out_users", "feedback_rate_per_minute", "feedback_burst", "urgent_notify_limit",
                "urgent_notify_window_seconds", "license_stale_after", "privacy_consent", "database_url",
                "database_pool_size")
# The listener's limits (exporter.server.connections), from CLARY_HEADER_TIMEOUT and so on.
ENV_SETTINGS += ("header_timeout", "body_timeout", "keepalive_timeout", "max_connections", "max_compression_ratio")
# Settings whose environment value is a comma-separated list.
_ENV_LISTS = ("ingest_tokens", "webhooks", "opted_out_users", "hmac_previous_secrets")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env_value(name: str, raw: str) -> Any:
    if name == "demo":
        lowered = raw.strip().lower()
        if lowered not in _TRUE | _FALSE:
            raise ConfigError(f"{ENV_PREFIX}DEMO: expected true or false, got {raw!r}")
        return lowered in _TRUE
    if name in _ENV_LISTS:
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    environ = os.environ if environ is None else environ
    found = {}
    for name in ENV_SETTINGS:
        key = ENV_PREFIX + name.upper()
        if key in environ:
            found[name] = _env_value(name, environ[key])
    return found


def _read_file(path: Path) -> dict[str, Any]:
    return read_mapping(path, "config file", ConfigError)


def _one_line(exc: ValidationError, source: str) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{source}: {where}: {first['msg']}{more}"


def load(flags: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Config:
    """Merge the layers; raises ConfigError with a one-line message."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    env = env_overrides(environ)
    config_path = flags.pop("config", None) or env.pop("config", None)
    env.pop("config", None)
    merged: dict[str, Any] = _read_file(Path(config_path)) if config_path else {}
    source = f"config file {config_path}" if config_path else "configuration"
    merged.update(env)
    merged.update(flags)
    if "privacy_consent" in merged:  # CLARY_PRIVACY_CONSENT, --privacy.consent: one key of the privacy: section
        section = merged.get("privacy")
        merged["privacy"] = {**(section if isinstance(section, dict) else {}), "consent": merged.pop("privacy_consent")}
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, source)) from None

