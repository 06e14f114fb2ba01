"""Feedback analysis through the API: feature and sentiment on POST /api/v1/feedback, in its JSON and CSV,
the metrics, and GET /api/v1/feedback/insights (rankings, CSV, auth, bad queries)."""

from __future__ import annotations

import csv
import io

import pytest
from prometheus_client import CollectorRegistry

from tests.api_helpers import ADMIN, app_client, value

URL = "/api/v1/feedback"
INSIGHTS = "/api/v1/feedback/insights"
ALICE = {"X-API-Key": "key-lite-alice"}
BOB = {"X-API-Key": "key-pro-bob"}


@pytest.fixture
def registry():
    return CollectorRegistry()


async def submit(client, headers=ALICE, **body):
    resp = await client.post(URL, json=body, headers=headers)
    return resp.status, await resp.json()


async def test_feature_and_sentiment_are_stored_returned_and_counted(aiohttp_client, tmp_path, registry):
    _, client = await app_client(aiohttp_client, tmp_path, registry)
    assert (await submit(client, type="bug", rating=1, text="OCR is not good, it keeps failing", feature="ocr"))[0] == 201
    assert (await submit(client, type="general", rating=5, text="I love it, great work!", feature="nope"))[0] == 201
    assert (await submit(client, type="survey", rating=3, text=""))[0] == 201
    page = await (await client.get(URL, headers=ADMIN)).json()
    got = [(i["feature"], i["sentiment_label"], i["sentiment"] is None) for i in page["items"]]
    assert got == [(None, None, True), ("other", "positive", False), ("ocr", "negative", False)]
    assert page["items"][2]["sentiment"] < -0.05 < 0.05 < page["items"][1]["sentiment"]
    # Filter by feature.
    only = await (await client.get(URL, params={"feature": "ocr"}, headers=ADMIN)).json()
    assert [i["text"] for i in only["items"]] == ["OCR is not good, it keeps failing"]
    # CSV: the same fields; the negative score is a number, not a quoted formula guard.
    text = await (await client.get(URL, params={"format": "csv"}, headers=ADMIN)).text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["feature"], r["sentiment_label"]) for r in rows] == [("", ""), ("other", "positive"), ("ocr", "negative")]
    assert float(rows[2]["sentiment"]) == page["items"][2]["sentiment"] and rows[0]["sentiment"] == ""
    # Metrics: the histogram by tier and type; the per-feature counters.
    assert value(registry, "clary_feedback_sentiment_count", tier="lite", type="bug") == 1
    assert value(registry, "clary_feedback_sentiment_bucket", tier="lite", type="bug", le="-0.05") == 1
    assert value(registry, "clary_feedback_sentiment_bucket", tier="lite", type="general", le="-0.05") == 0
    assert value(registry, "clary_feedback_sentiment_count", tier="lite", type="survey") == 0  # no text
    assert value(registry, "clary_feedback_feature_submissions_total", tier="lite", feature="ocr", type="bug") == 1
    assert value(registry, "clary_feedback_feature_submissions_total", tier="lite", feature="other", type="general") == 1
    assert value(registry, "clary_feedback_feature_low_ratings_total", tier="lite", feature="ocr") == 1
    assert value(registry, "clary_feedback_feature_negative_total", tier="lite", feature="ocr") == 1
    assert value(registry, "clary_feedback_feature_negative_total", tier="lite", feature="other") == 0


@pytest.mark.parametrize("feature, message", [(7, "string"), ("", "at least 1"), ("x" * 65, "at most 64"),
                                              (["ocr"], "string")])
async def test_a_feature_that_is_not_a_short_string_is_400_naming_it(aiohttp_client, tmp_path, registry, feature,
                                                                     message):
    _, client = await app_client(aiohttp_client, tmp_path, registry)
    status, body = await submit(client, type="bug", rating=3, text="x", feature=feature)
    assert status == 400 and body["field"] == "feature" and message in body["message"], body


async def test_the_configured_feature_allow_list_decides(aiohttp_client, tmp_path, registry):
    _, client = await app_client(aiohttp_client, tmp_path, registry, allow_lists={"feature": ["ocr", "invoices"]})
    for feature in ("invoices", "translation"):
        assert (await submit(client, type="general", rating=4, text="ok", feature=feature))[0] == 201
    page = await (await client.get(URL, headers=ADMIN)).json()
    assert [i["feature"] for i in page["items"]] == ["other", "invoices"]


async def test_insights_rank_pain_points_and_suggestions(aiohttp_client, tmp_path, registry):
    _, client = await app_client(aiohttp_client, tmp_path, registry, feedback_rate_per_minute=0)
    sent = [
        ("bug", 1, "Table extraction is broken and useless", "table_extraction"),  # bug + low + negative = 3
        ("bug", 4, "Table extraction shows the header twice", "table_extraction"),  # bug = 1
        ("general", 2, "OCR is fine", "ocr"),  # low = 1
        ("feature_request", 4, "Please add Japanese to translation", "translation"),
        ("feature_request", 5, "More languages for translation would be great", "translation"),
        ("feature_request", 4, "SSO with Okta please", "sso"),
        ("bug", 1, "Everything is terrible", None),  # unattributed
    ]
    for type_, rating, text, feature in sent:
        body = {"type": type_, "rating": rating, "text": text, **({"feature": feature} if feature else {})}
        assert (await submit(client, BOB, **body))[0] == 201
    report = await (await client.get(INSIGHTS, headers=ADMIN)).json()
    assert (report["feedback"], report["unattributed"], report["tier"]) == (7, 1, None)
    assert [(p["feature"], p["score"], p["bugs"], p["low_ratings"], p["negative"]) for p in report["pain_points"]] == [
        ("table_extraction", 4, 2, 1, 1), ("ocr", 1, 0, 1, 0)]
    assert report["pain_points"][0]["samples"] == ["Table extraction shows the header twice",
                                                   "Table extraction is broken and useless"]
    assert [(s["feature"], s["count"]) for s in report["suggestions"]] == [("translation", 2), ("sso", 1)]
    assert report["suggestions"][0]["samples"][0] == "More languages for translation would be great"
    # Another tier, another window: nothing.
    lite = await (await client.get(INSIGHTS, params={"tier": "lite"}, headers=ADMIN)).json()
    assert (lite["feedback"], lite["pain_points"], lite["suggestions"]) == (0, [], [])
    old = await (await client.get(INSIGHTS, params={"until": "2020-01-01T00:00:00Z"}, headers=ADMIN)).json()
    assert (old["since"], old["until"], old["feedback"]) == ("2019-12-02T00:00:00.000Z", "2020-01-01T00:00:00.000Z", 0)
    # CSV: one row per ranked entry.
    resp = await client.get(INSIGHTS, params={"format": "csv", "limit": "1"}, headers=ADMIN)
    assert resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [(r["kind"], r["rank"], r["feature"], r["score"], r["sample_1"]) for r in rows] == [
        ("pain_point", "1", "table_extraction", "4", "Table extraction shows the header twice"),
        ("suggestion", "1", "translation", "2", "More languages for translation would be great")]


@pytest.mark.parametrize("params, field", [
    ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since"),
    ({"until": "yesterday"}, "until"), ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"),
    ({"tier": "gold"}, "tier"), ({"format": "xml"}, "format"), ({"feature": "ocr"}, "feature"),
])
async def test_a_bad_insights_query_is_400_naming_the_parameter(aiohttp_client, tmp_path, registry, params, field):
    _, client = await app_client(aiohttp_client, tmp_path, registry)
    resp = await client.get(INSIGHTS, params=params, headers=ADMIN)
    assert resp.status == 400 and (await resp.json())["field"] == field


async def test_insights_need_the_admin_token(aiohttp_client, tmp_path, registry):
    _, client = await app_client(aiohttp_client, tmp_path, registry)
    assert (await client.get(INSIGHTS)).status == 401
    assert (await client.get(INSIGHTS, headers={"Authorization": "Bearer wrong-token-0123456789"})).status == 401


def test_the_recorder_checks_the_score_and_counts_features_only_when_named():
    from exporter.instrument import Hasher, Recorder

    reg = CollectorRegistry()
    recorder = Recorder(reg, Hasher("test-hmac-secret-0123456789abcdef"))
    with pytest.raises(ValueError, match="sentiment must be -1..1"):
        recorder.feedback("lite", "general", 4, sentiment=1.5)
    recorder.feedback("lite", "general", 1, sentiment=-0.8)  # no feature: only the histogram
    recorder.feedback("lite", "general", 5, feature="unheard_of", sentiment=0.9)
    assert value(reg, "clary_feedback_sentiment_count", tier="lite", type="general") == 2
    assert value(reg, "clary_feedback_sentiment_bucket", tier="lite", type="general", le="-0.75") == 1
    assert sum(value(reg, "clary_feedback_feature_low_ratings_total", tier="lite", feature=f)
               for f in ("ocr", "other")) == 0
    assert value(reg, "clary_feedback_feature_submissions_total", tier="lite", feature="other", type="general") == 1
