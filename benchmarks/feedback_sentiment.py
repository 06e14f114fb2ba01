"""Cost of feedback sentiment (VADER) and what it does to the event loop.

Two measurements, in one process:

1. ``score(text)`` wall time per text length (a sentence up to the API's
   4,000-character limit), median and worst of ``--rounds`` calls;
2. event-loop lag while a 4,000-character text is scored: a task that
   sleeps 1 ms at a time records how late it wakes, once with the text
   scored on the loop (``score``) and once on the sentiment thread
   (``score_async``, what the exporter does). The thread still holds the
   GIL in slices (``sys.getswitchinterval()``), so the loop is slowed, not
   stopped.

Usage: python -m benchmarks.feedback_sentiment [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from exporter.instrument import sentiment

RESULTS = Path(__file__).resolve().parent / "results" / "feedback_sentiment.md"
SENTENCE = "The table extraction is great, but it keeps failing on scanned invoices and support is slow. "
SIZES = (len(SENTENCE), 500, 1000, 2000, 4000)


def text(size: int) -> str:
    return (SENTENCE * (size // len(SENTENCE) + 1))[:size]


def timings(rounds: int) -> list[tuple[int, float, float]]:
    sentiment.score("warm up")  # the lexicon is read once
    rows = []
    for size in SIZES:
        sample = text(size)
        times = []
        for _ in range(rounds if size < 2000 else max(3, rounds // 4)):
            started = time.perf_counter()
            sentiment.score(sample)
            times.append((time.perf_counter() - started) * 1000)
        rows.append((size, statistics.median(times), max(times)))
    return rows


async def lag(on_thread: bool, texts: int = 3) -> tuple[float, float]:
    """(p99, max) lateness in ms of 1 ms sleeps while ``texts`` long texts are scored."""
    late: list[float] = []
    done = asyncio.Event()

    async def ticker():
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            late.append((time.perf_counter() - started) * 1000 - 1)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    sample = text(4000)
    for _ in range(texts):
        if on_thread:
            await sentiment.score_async(sample)
        else:
            sentiment.score(sample)
            await asyncio.sleep(0)
    done.set()
    await task
    late.sort()
    return late[int(len(late) * 0.99) - 1] if late else 0.0, late[-1] if late else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    rows = timings(args.rounds)
    inline = asyncio.run(lag(on_thread=False))
    threaded = asyncio.run(lag(on_thread=True))
    lines = ["| text (characters) | score() median (ms) | worst (ms) |", "|---|---|---|"]
    lines += [f"| {size:,} | {median:.2f} | {worst:.2f} |" for size, median, worst in rows]
    lines += ["", "| 3 texts of 4,000 characters scored | loop lag p99 (ms) | loop lag max (ms) |", "|---|---|---|",
              f"| on the event loop (`score`) | {inline[0]:.1f} | {inline[1]:.1f} |",
              f"| on the sentiment thread (`score_async`, the exporter) | {threaded[0]:.1f} | {threaded[1]:.1f} |",
              "", f"Python {sys.version.split()[0]}, switch interval {sys.getswitchinterval() * 1000:.1f} ms."]
    report = "\n".join(lines) + "\n"
    print(report)
    RESULTS.write_text("# Feedback sentiment (`benchmarks/feedback_sentiment.py`)\n\n" + report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
