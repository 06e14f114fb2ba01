"""Demo feedback (exporter.demo.feedback): features and texts whose sentiment matches the rating, through the
demo API's recorder and through the stored feedback API, so every feedback-analysis panel has data."""

from __future__ import annotations

import asyncio
import random

import pytest
from prometheus_client import CollectorRegistry

from exporter import demo
from exporter.catalog import FEATURE
from exporter.config import Config
from exporter.demo import DEMO_INGEST_TOKEN
from exporter.demo.api import PLANS
from exporter.demo.feedback import UNLISTED, demo_feedback
from exporter.demo.traffic import DemoTraffic
from exporter.instrument.sentiment import label, score
from tests.api_helpers import database, value


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.mark.parametrize("tier", sorted(PLANS))
def test_demo_texts_match_their_ratings_and_name_the_tiers_features(tier):
    rng = random.Random(tier)
    bodies = [demo_feedback(rng, PLANS[tier].features) for _ in range(300)]
    for body in bodies:
        assert body.get("feature") in (*PLANS[tier].features, *UNLISTED, None)
        if body["rating"] <= 2 and body["type"] != "feature_request":
            assert label(score(body["text"])) == "negative", body
        if body["rating"] >= 4 and body["type"] in ("general", "survey"):
            assert label(score(body["text"])) == "positive", body
    kinds = {(body["type"], label(score(body["text"]))) for body in bodies}
    assert {("bug", "negative"), ("general", "positive"), ("feature_request", "positive")} <= kinds
    assert any("feature" not in body for body in bodies) and any(body.get("feature") in UNLISTED for body in bodies)


async def test_demo_api_feedback_records_sentiment_and_feature(aiohttp_client, tmp_path, registry):
    app = demo.create_app(Config(demo=True, collectors={"system": False, "gpu": False}, data_dir=tmp_path), registry)
    client = await aiohttp_client(app)
    resp = await client.post("/demo/api/v1/feedback", headers={"X-API-Key": "demo-standard-key"},
                             json={"type": "bug", "rating": 1, "feature": "ocr", "text": "OCR is awful and broken"})
    assert resp.status == 201
    assert value(registry, "clary_feedback_sentiment_bucket", tier="standard", type="bug", le="-0.05") == 1
    assert value(registry, "clary_feedback_feature_negative_total", tier="standard", feature="ocr") == 1
    assert value(registry, "clary_feedback_feature_low_ratings_total", tier="standard", feature="ocr") == 1


async def test_demo_traffic_stores_feedback_with_features_and_sentiment(aiohttp_client, tmp_path, registry):
    config = Config(demo=True, collectors={"system": False, "gpu": False}, data_dir=tmp_path)
    client = await aiohttp_client(demo.create_app(config, registry))
    traffic = DemoTraffic(str(client.make_url("")).rstrip("/"), rate=1000, max_requests=400, rng=random.Random(5),
                          ingest_token=DEMO_INGEST_TOKEN)
    stats = await asyncio.wait_for(traffic.run(), 60)
    assert stats.ingest_errors == 0 and stats.feedback_stored > 0
    stored = database(tmp_path).list_feedback(limit=500)[0]
    assert all(row["sentiment"] == score(row["text"]) for row in stored)
    assert {row["feature"] for row in stored} <= {*FEATURE.values, "other", None}
    assert any(row["feature"] for row in stored)
    observed = sum(value(registry, "clary_feedback_sentiment_count", tier=tier, type=kind)
                   for tier in PLANS for kind in ("bug", "feature_request", "general", "survey"))
    assert observed == sum(value(registry, "clary_feedback_submissions_total", tier=tier, type=kind)
                           for tier in PLANS for kind in ("bug", "feature_request", "general", "survey")) > 0
