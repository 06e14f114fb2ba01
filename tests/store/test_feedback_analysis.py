"""Feedback analysis in the store: sentiment (VADER) on the right side, the version-4 migration of an
older file, and the pain-point / suggestion rankings against a simple reference (exporter.store.insights)."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.instrument import sentiment
from exporter.store import insights
from exporter.store.database import DAY, Database, FeedbackRecord
from exporter.store.schema import SCHEMA_VERSION
from tests import store_backend

NOW = 1_750_000_000.0
NEGATIVE = [
    "not good",
    "The OCR is terrible and keeps failing on every scanned invoice.",
    "This update broke table extraction, I hate it. Useless.",
    "Awful support, very disappointed and frustrated.",
    "Translation is not helpful at all and really slow",
]
POSITIVE = [
    "good",
    "I love the new summarization, it is great!",
    "Excellent table extraction, works perfectly and saves us hours.",
    "Thanks, the redaction feature is really helpful and easy to use.",
    "not bad at all, quite nice",
]


@pytest.mark.parametrize("text", NEGATIVE)
def test_clearly_negative_texts_are_negative(text):
    compound = sentiment.score(text)
    assert compound <= sentiment.NEGATIVE_AT and sentiment.label(compound) == "negative", compound


@pytest.mark.parametrize("text", POSITIVE)
def test_clearly_positive_texts_are_positive(text):
    compound = sentiment.score(text)
    assert compound >= sentiment.POSITIVE_AT and sentiment.label(compound) == "positive", compound


def test_the_labels_use_vaders_cut_offs_and_an_empty_text_has_none():
    assert [sentiment.label(v) for v in (-1, -0.05, -0.0499, 0, 0.0499, 0.05, 1)] == [
        "negative", "negative", "neutral", "neutral", "neutral", "positive", "positive"]
    assert sentiment.score("") is None and sentiment.score("  \n") is None and sentiment.label(None) is None
    assert sentiment.label(sentiment.score("The invoice has three pages.")) == "neutral"


V2_FEEDBACK = """CREATE TABLE feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, created_at REAL NOT NULL, tier TEXT NOT NULL,
    type TEXT NOT NULL, rating INTEGER NOT NULL, urgent INTEGER NOT NULL, text TEXT NOT NULL, metadata TEXT,
    user_hash TEXT);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
PRAGMA user_version = 2;
"""


@pytest.mark.sqlite_only
def test_a_version_2_file_gets_the_columns_and_its_stored_texts_get_sentiment(tmp_path, monkeypatch):
    path = tmp_path / "clary.db"
    conn = sqlite3.connect(path)
    conn.executescript(V2_FEEDBACK)
    texts = [*NEGATIVE, *POSITIVE, ""] * 3  # 33 rows: several batches of 5
    conn.executemany("INSERT INTO feedback (id, created_at, tier, type, rating, urgent, text) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     [(f"id-{n}", NOW, "lite", "general", 3, 0, text) for n, text in enumerate(texts)])
    conn.commit()
    conn.close()
    monkeypatch.setattr("exporter.store.migrations.BACKFILL_BATCH", 5)
    db = Database(path)
    rows, _ = db.list_feedback(limit=500)
    by_text = {}
    for row in rows:
        by_text.setdefault(row["text"], set()).add((row["sentiment_label"], row["feature"]))
    assert {text: by_text[text] for text in NEGATIVE} == {text: {("negative", None)} for text in NEGATIVE}
    assert {text: by_text[text] for text in POSITIVE} == {text: {("positive", None)} for text in POSITIVE}
    assert by_text[""] == {(None, None)}
    assert all(row["sentiment"] == sentiment.score(row["text"]) for row in rows)
    assert db.connection().execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 4
    db.close()


@pytest.mark.sqlite_only
def test_an_interrupted_back_fill_is_finished_at_the_next_start(tmp_path):
    path = tmp_path / "clary.db"
    db = Database(path)
    db.add_feedback(FeedbackRecord(tier="lite", type="bug", rating=1, text="this is awful", metadata=None,
                                   user_hash=None, urgent=True, created_at=NOW))
    conn = db.connection()
    conn.execute("UPDATE feedback SET sentiment = NULL")  # as a crash mid back-fill leaves it
    conn.execute("PRAGMA user_version = 3")
    db.close()
    db = Database(path)
    assert db.list_feedback()[0][0]["sentiment_label"] == "negative"
    db.close()


def test_deletion_and_retention_remove_the_analysed_rows(tmp_path):
    db = store_backend.database(tmp_path)
    for age, user in ((400, None), (1, "a" * 64)):
        db.add_feedback(FeedbackRecord(tier="lite", type="bug", rating=1, text="broken", metadata=None, user_hash=user,
                                       urgent=True, created_at=NOW - age * DAY, feature="ocr", sentiment=-0.5))
    assert db.purge(365, NOW)["feedback"] == 1 and db.delete_user("a" * 64)["feedback"] == 1
    assert db.connection().execute("SELECT COUNT(*) FROM feedback WHERE feature IS NOT NULL OR sentiment IS NOT NULL"
                                   ).fetchone()[0] == 0
    assert db.feedback_insights(0, NOW + 1) == []
    db.close()


# --- rankings against a reference ---------------------------------------------------------------

FEATURES = [None, "ocr", "translation", "sso", "other"]
ROW = st.tuples(st.sampled_from(FEATURES), st.sampled_from(["bug", "feature_request", "general", "survey"]),
                st.integers(1, 5), st.sampled_from([None, -0.9, -0.05, -0.04, 0.0, 0.5]), st.booleans(),
                st.sampled_from(["lite", "professional"]))


def reference(rows, tier, limit):
    """Plain Python: the documented score and orders."""
    stats = {}
    for feature, type_, rating, compound, inside, row_tier in rows:
        if not inside or feature is None or (tier and row_tier != tier):
            continue
        s = stats.setdefault(feature, {"bugs": 0, "low": 0, "neg": 0, "requests": 0})
        s["bugs"] += type_ == "bug"
        s["low"] += rating <= 2
        s["neg"] += compound is not None and compound <= -0.05
        s["requests"] += type_ == "feature_request"
    score = {f: s["bugs"] + s["low"] + s["neg"] for f, s in stats.items()}
    pains = sorted((f for f in stats if score[f] > 0), key=lambda f: (-score[f], -stats[f]["bugs"], f))[:limit]
    wanted = sorted((f for f in stats if stats[f]["requests"]), key=lambda f: (-stats[f]["requests"], f))[:limit]
    return [(f, score[f]) for f in pains], [(f, stats[f]["requests"]) for f in wanted]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, max_size=40), tier=st.sampled_from([None, "lite"]), limit=st.integers(1, 5))
def test_rankings_match_the_reference(tmp_path_factory, rows, tier, limit):
    db = store_backend.database(tmp_path_factory.mktemp("rank"))
    for n, (feature, type_, rating, compound, inside, row_tier) in enumerate(rows):
        created = NOW - (DAY if inside else 40 * DAY)  # outside the 30-day window: not counted
        db.add_feedback(FeedbackRecord(tier=row_tier, type=type_, rating=rating, text=f"text {n}", metadata=None,
                                       user_hash=None, urgent=False, created_at=created, feature=feature,
                                       sentiment=compound))
    stats = db.feedback_insights(NOW - 30 * DAY, NOW, tier)
    got = ([(s.feature, s.score) for s in insights.pain_points(stats, limit)],
           [(s.feature, s.feature_requests) for s in insights.suggestions(stats, limit)])
    assert got == reference(rows, tier, limit)
    db.close()


def test_samples_are_the_latest_texts_of_each_kind(tmp_path):
    db = store_backend.database(tmp_path)
    for n, (type_, rating, compound, text) in enumerate([
        ("bug", 4, 0.0, "crash one"), ("general", 5, 0.8, "lovely"), ("general", 1, None, "two stars... no, one"),
        ("feature_request", 4, 0.3, "please add A"), ("feature_request", 5, 0.1, "please add B"),
        ("general", 3, -0.6, "x" * 400), ("bug", 3, 0.0, ""),
    ]):
        db.add_feedback(FeedbackRecord(tier="lite", type=type_, rating=rating, text=text, metadata=None,
                                       user_hash=None, urgent=False, created_at=NOW - 100 + n, feature="ocr",
                                       sentiment=compound))
    (ocr,) = db.feedback_insights(NOW - DAY, NOW)
    assert (ocr.bugs, ocr.low_ratings, ocr.negative, ocr.feature_requests, ocr.feedback) == (2, 1, 1, 2, 7)
    assert ocr.pain_samples == ["x" * 280 + "…", "two stars... no, one", "crash one"]
    assert ocr.request_samples == ["please add B", "please add A"]
    db.close()
