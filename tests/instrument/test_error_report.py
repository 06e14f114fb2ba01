"""Error records in the service: redaction, size cap, fingerprints, and the bounded queue that never blocks."""

from __future__ import annotations

import asyncio
import traceback

from exporter.instrument.error_report import (MAX_REPORT_CHARS, ErrorReporter, error_record, fingerprint,
                                              sink_of)
from exporter.logs import REDACTED, redact


def raised(source: str, padding: int = 0) -> BaseException:
    """The exception ``source``'s ``fail()`` raises, compiled ``padding`` lines further down the file."""
    scope: dict = {}
    exec(compile("\n" * padding + source, "/srv/app/documents.py", "exec"), scope)
    try:
        scope["fail"]()
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("fail() returned")


BUG = "def fail():\n    raise KeyError('document 8f14e45fceea167a5a36dedd4bea2543 of user ann@example.org')\n"


def test_messages_lose_emails_uuids_hex_ids_long_numbers_and_credentials():
    text = ("user ann@example.org doc 3f2504e0-4f89-11d3-9a0c-0305e82c3301 sha 8f14e45fceea167a5a36dedd4bea2543 "
            "account 4111111111111111 Authorization: Bearer abc.def line 42 of page 7")
    assert redact(text, ["sekrit-value"]) == (
        f"user {REDACTED} doc {REDACTED} sha {REDACTED} account {REDACTED} Authorization: {REDACTED}")
    assert redact("line 42 of page 7, retry 3 in 1000 ms") == "line 42 of page 7, retry 3 in 1000 ms"


def test_a_record_is_redacted_and_capped():
    exc = raised(BUG)
    exc.add_note("x" * 10_000)
    record = error_record(exc, "id-1", "/documents/{id}", "lite", user="ann", secrets=("key-ann-123",))
    assert record["error_type"] == "KeyError" and record["user_id"] == "ann" and record["id"] == "id-1"
    assert "ann@example.org" not in record["message"] + record["trace"]
    assert "8f14e45fceea167a5a36dedd4bea2543" not in record["message"] + record["trace"]
    assert len(record["message"]) + len(record["trace"]) <= MAX_REPORT_CHARS
    assert record["trace"].rstrip().endswith("x" * 100)  # the innermost end is what is kept


def test_a_line_shift_or_another_id_does_not_change_the_fingerprint():
    before, after = raised(BUG), raised(BUG.replace("8f14", "0000"), padding=37)
    traces = ["".join(traceback.format_exception(exc)) for exc in (before, after)]
    assert "line 2," in traces[0] and "line 39," in traces[1]
    assert fingerprint("KeyError", traces[0]) == fingerprint("KeyError", traces[1])
    assert fingerprint("KeyError", traces[0]) != fingerprint("ValueError", traces[0])
    other = raised(BUG.replace("def fail():", "def fail():\n    return helper()\ndef helper():"))
    assert fingerprint("KeyError", "".join(traceback.format_exception(other))) != fingerprint("KeyError", traces[0])


class StuckClient:
    """An EventClient whose exporter never answers."""

    def __init__(self):
        self.received: list[dict] = []
        self.release = asyncio.Event()

    async def send(self, event: dict) -> None:
        self.received.append(event)
        await self.release.wait()


async def test_a_full_queue_drops_and_counts_instead_of_blocking():
    client = StuckClient()
    reporter = sink_of(client)
    assert isinstance(reporter, ErrorReporter)
    reporter.max_pending = 3
    results = [reporter.report({"n": n}) for n in range(10)]  # a plain call: nothing here can wait
    assert results == [True] * 3 + [False] * 7
    assert (reporter.dropped, reporter.pending) == (7, 3)
    await asyncio.sleep(0)  # the drain task takes one and waits on the stuck client
    assert client.received == [{"n": 0}] and reporter.pending == 2
    assert reporter.report({"n": 10}) is True and reporter.report({"n": 11}) is False
    client.release.set()
    await reporter.close()
    assert [e["n"] for e in client.received] == [0, 1, 2, 10] and reporter.sent == 4 and reporter.dropped == 8


async def test_a_failing_client_costs_a_count_not_an_exception():
    class Broken:
        async def send(self, event):
            raise ConnectionError("exporter down")

    reporter = ErrorReporter(Broken())
    assert reporter.report({"n": 1}) is True
    await reporter.close()
    assert (reporter.sent, reporter.dropped) == (0, 1)


def test_reporting_is_off_unless_asked_for():
    assert sink_of(None) is None
