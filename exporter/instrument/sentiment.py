"""Sentiment of a feedback text: VADER's compound score (-1..1) and its label.

VADER (``vaderSentiment``) is rule-based: its lexicon ships inside the wheel
and is read from there, so nothing is downloaded at run time and no model
is loaded. The package declares ``requests`` but imports it only in its
``__main__`` demo, never when imported. Labels use VADER's standard
cut-offs: ``compound <= -0.05`` is negative, ``>= 0.05`` positive, neutral
in between. A text that is empty (or only blanks) has no sentiment: None.

Cost: VADER is pure Python and superlinear in the number of words (0.06 ms
for a sentence, about 20 ms for a 4,000-character text; more on a busy
machine: ``benchmarks/feedback_sentiment.py``), so the exporter scores on
one dedicated thread (:func:`score_async`), never on the event loop, one
text at a time.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

NEGATIVE_AT = -0.05
"""Compound scores at or below this are negative (VADER's standard cut-off)."""
POSITIVE_AT = 0.05
"""Compound scores at or above this are positive."""
LABELS = ("negative", "neutral", "positive")

_lock = threading.Lock()
_analyzer = None
_executor: ThreadPoolExecutor | None = None


def _vader():
    global _analyzer
    with _lock:
        if _analyzer is None:  # reads the lexicon from the installed package (~40 ms, once)
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            _analyzer = SentimentIntensityAnalyzer()
        return _analyzer


def score(text: str) -> float | None:
    """VADER's compound score of ``text``, -1 (most negative) to 1; None for an empty text."""
    if not text or text.isspace():
        return None
    return float(_vader().polarity_scores(text)["compound"])


def label(compound: float | None) -> str | None:
    """``negative``, ``neutral`` or ``positive`` for a compound score; None for None."""
    if compound is None:
        return None
    if compound <= NEGATIVE_AT:
        return "negative"
    if compound >= POSITIVE_AT:
        return "positive"
    return "neutral"


async def score_async(text: str) -> float | None:
    """:func:`score` on the sentiment thread, so a long text never stalls the event loop."""
    global _executor
    if not text or text.isspace():
        return None
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clary-sentiment")
    return await asyncio.get_running_loop().run_in_executor(_executor, score, text)
