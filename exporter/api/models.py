"""The API's request, response and query schemas (pydantic), shared by handlers and OpenAPI."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, field_validator

from exporter.catalog import TIERS

MAX_TEXT = 4000
MAX_METADATA_BYTES = 4096
MAX_PAGE = 500
MAX_INSIGHTS = 100
FeatureName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
FEEDBACK_TYPES = ("bug", "feature_request", "general", "survey")


class FeedbackIn(BaseModel):
    """The body of ``POST /api/v1/feedback``. Tier and user come from the API key."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    type: Literal[FEEDBACK_TYPES]  # type: ignore[valid-type]
    rating: int = Field(ge=1, le=5, description="1 (worst) to 5; a bug rated 2 or lower is urgent")
    text: Annotated[str, StringConstraints(max_length=MAX_TEXT, pattern=r"^[^\x00]*$")] = Field(
        "", description=f"free text, at most {MAX_TEXT} characters")
    metadata: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], JsonValue] | None = Field(
        None, max_length=32,
        description=f"optional context (app version, page...), at most 32 keys and {MAX_METADATA_BYTES} bytes "
                    "as JSON; no personal data")
    feature: FeatureName | None = Field(
        None, description="the feature the feedback is about, from the feature allow-list (`ocr`, "
                          "`table_extraction`...); any other name is stored as `other`")

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value):
        if value is None:
            return value
        try:
            encoded = json.dumps(value, separators=(",", ":"), allow_nan=False)
        except ValueError:
            raise ValueError("must not contain NaN or Infinity") from None
        if len(encoded.encode()) > MAX_METADATA_BYTES:
            raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
        return value


class FeedbackCreated(BaseModel):
    id: str
    created_at: str = Field(description="ISO 8601, UTC")
    urgent: bool


class FeedbackItem(BaseModel):
    id: str
    created_at: str = Field(description="ISO 8601, UTC")
    tier: str
    type: str
    rating: int
    urgent: bool
    text: str
    metadata: dict[str, JsonValue] | None
    user_hash: str | None = Field(description="HMAC of the user id; null for opted-out users")
    feature: str | None = Field(description="the feature named (allow-list or `other`); null if none")
    sentiment: float | None = Field(description="VADER compound score of the text, -1..1; null for an empty text")
    sentiment_label: Literal["negative", "neutral", "positive"] | None = Field(
        description="negative at <= -0.05, positive at >= 0.05, else neutral; null for an empty text")


class FeedbackPage(BaseModel):
    items: list[FeedbackItem]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page; null at the end")


class FeedbackQuery(BaseModel):
    """Query parameters of ``GET /api/v1/feedback``."""

    model_config = ConfigDict(extra="forbid")
    tier: Literal[TIERS] | None = None  # type: ignore[valid-type]
    type: Literal[FEEDBACK_TYPES] | None = None  # type: ignore[valid-type]
    feature: FeatureName | None = Field(None, description="only feedback naming this feature (`other` included)")
    since: datetime | None = Field(None, description="ISO 8601 (UTC if no offset) or unix seconds")
    limit: int = Field(50, ge=1, le=MAX_PAGE, description="page size (JSON only)")
    cursor: int | None = Field(None, ge=1, le=2**62, description="from next_cursor of the previous page")
    format: Literal["json", "csv"] = Field("json", description="csv exports every matching row")


class InsightsQuery(BaseModel):
    """Query parameters of ``GET /api/v1/feedback/insights``."""

    model_config = ConfigDict(extra="forbid")
    since: datetime | None = Field(None, description="window start, ISO 8601 or unix seconds; default: 30 days "
                                                     "before `until`")
    until: datetime | None = Field(None, description="window end (exclusive); default: now")
    tier: Literal[TIERS] | None = None  # type: ignore[valid-type]
    limit: int = Field(10, ge=1, le=MAX_INSIGHTS, description="entries per ranking")
    format: Literal["json", "csv"] = Field("json", description="csv: one row per ranked entry, with a `kind` column")


class PainPoint(BaseModel):
    feature: str
    score: int = Field(description="bugs + low_ratings + negative")
    bugs: int = Field(description="bug reports naming the feature")
    low_ratings: int = Field(description="feedback rated 2 or lower")
    negative: int = Field(description="feedback whose text is negative (sentiment <= -0.05)")
    feedback: int = Field(description="all feedback naming the feature")
    average_sentiment: float | None
    samples: list[str] = Field(description="the latest texts of its bugs, low ratings and negative texts")


class Suggestion(BaseModel):
    feature: str
    count: int = Field(description="feature requests naming the feature")
    feedback: int = Field(description="all feedback naming the feature")
    average_sentiment: float | None
    samples: list[str] = Field(description="the latest texts of those feature requests")


class FeedbackInsights(BaseModel):
    since: str = Field(description="ISO 8601, UTC")
    until: str = Field(description="ISO 8601, UTC")
    tier: str | None
    feedback: int = Field(description="feedback in the window")
    unattributed: int = Field(description="of which naming no feature (in neither ranking)")
    pain_points: list[PainPoint]
    suggestions: list[Suggestion]


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable code")
    field: str = Field(description="the offending field, query parameter, header, 'body', or 'storage' (503)")
    message: str


class RemovedCounts(BaseModel):
    feedback: int
    notifications: int = Field(description="pending webhook deliveries of that feedback")
    activity: int = Field(description="daily per-user activity rows")
    errors: int = Field(0, description="error records (GET /api/v1/errors/{error_id}) of the user's requests")
    consents: int = Field(0, description="consent records (the opt-out stays)")


class UserRemoved(BaseModel):
    removed: RemovedCounts
    total: int


class OptOutState(BaseModel):
    opted_out: bool


class UserPath(BaseModel):
    model_config = ConfigDict(strict=True)
    user_id: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]



class ConsentIn(BaseModel):
    """A consent decision (``privacy.consent``; exporter.store.consent)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    state: Literal["granted", "withdrawn"]
    policy_version: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")] \
        = Field(description="the version of the privacy policy the user saw, e.g. 2026-01")


class ConsentState(BaseModel):
    state: Literal["granted", "withdrawn"]
    policy_version: str
    tracked: bool = Field(description="whether per-user data is kept for the user now (consent mode and opt-outs)")


class UserExport(BaseModel):
    """Everything stored for one user (right of access); rows keyed by the user's HMAC under each secret."""

    consent_mode: Literal["opt_out", "opt_in"]
    opted_out: bool
    consent: str | None = Field(description="latest consent state: granted, withdrawn, or null if none recorded")
    tracked: bool
    feedback: list[dict[str, Any]]
    activity: list[dict[str, Any]]
    error_records: list[dict[str, Any]]
    opt_outs: list[dict[str, Any]]
    consents: list[dict[str, Any]] = Field(description="consent history, oldest first")
