"""Demo feedback that reads like customers wrote it: a feature, a type, a rating and a matching text.

Ratings of 1-2 come with complaints, 3 with mixed or matter-of-fact
remarks, 4-5 with praise; feature requests ask for something. A few
features (``PAIN``) draw more bug reports and low ratings, so the pain-point
ranking (``GET /api/v1/feedback/insights``) and the feedback dashboards'
per-feature panels show a clear leader. Some feedback names no feature,
and some names one outside the allow-list (counted as ``other``).
"""

from __future__ import annotations

import random

TYPES = ("bug", "feature_request", "general", "survey")
PAIN = ("table_extraction", "handwriting", "ocr")
UNLISTED = ("dark_mode", "mobile_app")  # not in the feature allow-list: stored and counted as "other"

NEGATIVE = (
    "{f} keeps failing on scanned invoices, this is really frustrating.",
    "{f} is terrible since the last update, totally useless for us.",
    "Very disappointed: {f} is slow and the results are wrong.",
    "{f} broke again and nobody answered our ticket. Awful.",
    "Not good. {f} misses half of the fields on every page.",
)
NEUTRAL = (
    "{f} works for most documents; a few pages need a second pass.",
    "We use {f} every day for the monthly reports.",
    "{f} is okay, though results vary between document layouts.",
)
POSITIVE = (
    "{f} is great, it saves our team hours every week!",
    "Love the new {f}, fast and accurate. Thank you!",
    "Excellent {f}, works perfectly on our contracts.",
    "Really happy with {f}, the results are impressive.",
)
BUG_REPORTS = (
    "{f} returns an empty result for two-column PDFs.",
    "{f} shows the header row twice in the export.",
)
REQUESTS = (
    "Please add support for more languages to {f}.",
    "It would be great if {f} could export straight to Excel.",
    "Could {f} handle multi-page tables? That would help a lot.",
    "We would love an API option to run {f} in bulk.",
)


def demo_feedback(rng: random.Random, features: tuple[str, ...]) -> dict:
    """One feedback body for ``POST /api/v1/feedback`` (and the demo API), from a tier's ``features``."""
    roll = rng.random()
    if roll < 0.1:
        feature = None
    elif roll < 0.15:
        feature = rng.choice(UNLISTED)
    else:
        pains = [f for f in features if f in PAIN]
        feature = rng.choice(pains) if pains and rng.random() < 0.4 else rng.choice(features)
    kind = rng.choices(TYPES, (4, 3, 3, 2))[0]
    if feature in PAIN and rng.random() < 0.5:
        kind = "bug"
    if kind == "bug":
        rating = rng.choices((1, 2, 3, 4), (4, 3, 2, 1))[0]
    else:
        rating = rng.choices((1, 2, 3, 4, 5), (1, 1, 2, 4, 4))[0]
    name = {"ocr": "OCR", "sso": "SSO"}.get(feature, (feature or "the product").replace("_", " "))
    if kind == "feature_request":
        texts = REQUESTS
    elif rating <= 2:
        texts = NEGATIVE
    elif kind == "bug":
        texts = BUG_REPORTS
    else:
        texts = NEUTRAL if rating == 3 else POSITIVE
    text = rng.choice(texts).format(f=name)
    body = {"type": kind, "rating": rating, "text": text[0].upper() + text[1:]}
    if feature is not None:
        body["feature"] = feature
    return body


def urgent_bug(features: tuple[str, ...]) -> dict:
    """A bug report rated 1 with an unmistakably negative text (the urgent path)."""
    return {"type": "bug", "rating": 1, "feature": features[0],
            "text": f"{features[0].replace('_', ' ').capitalize()} is broken for every upload, this is awful."}
