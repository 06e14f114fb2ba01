"""The log filter: header values, tokens and configured secrets removed; malformed requests one line, rate limited."""

from __future__ import annotations

import io
import json
import logging

import pytest
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from exporter import logs

SECRET = "ingest-token-0123456789abcdef"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def captured():
    """The root logger set up as the CLI does, writing into a buffer; restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    redactor = logs.setup("info", "text", stream=stream, secrets=[SECRET, "short"])
    yield stream, redactor
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def _parser_error(logger: str = "aiohttp.server") -> None:
    try:
        raise BadHttpMessage("Invalid header value char:\n\n  "
                             f"b'Authorization: Bearer {SECRET[:10]}\\x01{SECRET[10:]}'")
    except BadHttpMessage:
        logging.getLogger(logger).exception("Error handling request from %s", "203.0.113.7")


@pytest.mark.parametrize("text, expected", [
    ("b'Authorization: Bearer abc\\x01def'", "b'Authorization: <redacted>"),
    ("x-api-key=ck_live_1234 and more", "x-api-key=<redacted>"),
    ("sent Bearer abc.def.ghi to it", "sent Bearer <redacted> to it"),
    ("header Basic dXNlcjpwYXNzd29yZA==", "header Basic <redacted>"),
    ("basic auth is on; no ingest token is configured", "basic auth is on; no ingest token is configured"),
    (f"token {SECRET} leaked", "token <redacted> leaked"),
])
def test_scrub_removes_header_values_credentials_and_secrets(text, expected):
    assert logs.scrub(text, [SECRET]) == expected


def test_a_malformed_request_is_one_warning_line_without_peer_header_or_traceback(captured):
    stream, _ = captured
    _parser_error()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("WARNING aiohttp.server: malformed request refused: BadHttpMessage: "
                             "Invalid header value char")
    assert "203.0.113.7" not in lines[0] and SECRET[:10] not in lines[0]


def test_malformed_request_lines_are_rate_limited_and_the_rest_counted(captured):
    stream, redactor = captured
    redactor.clock = clock = Clock()
    redactor.burst, redactor.interval = 3, 60.0
    for _ in range(7):
        _parser_error()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[-1].endswith("; more in the next 60 s are counted, not logged")
    clock.now += 61
    _parser_error()
    assert stream.getvalue().splitlines()[-1].endswith("; 4 more since were not logged")
    for _ in range(5):
        _parser_error()
    logs.flush()
    assert stream.getvalue().splitlines()[-1].endswith(
        "exporter: 3 malformed requests were refused without a log line (rate limited)")


def test_malformed_request_lines_follow_the_log_level(captured):
    stream, _ = captured
    logging.getLogger().setLevel(logging.ERROR)
    _parser_error()
    assert stream.getvalue() == ""


def test_a_third_party_exception_keeps_its_traceback_but_not_its_message(captured):
    stream, _ = captured
    user = "user-id-raw"
    try:
        raise KeyError(user)  # the source line is in the traceback, the value is not
    except KeyError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved\nfuture: <Task exception=%r>",
                                               "KeyError('user-id-raw')")
    text = stream.getvalue()
    assert "Task exception was never retrieved" in text and "Traceback (most recent call last)" in text
    assert text.rstrip().endswith("KeyError (message withheld from the log)")
    assert "user-id" not in text and "future:" not in text


def test_our_own_exceptions_keep_their_message_scrubbed(captured):
    stream, _ = captured
    try:
        raise OSError(f"disk full while storing for Bearer {SECRET}")
    except OSError:
        logging.getLogger("exporter.api").exception("feedback not stored", extra={"fields": {"key": SECRET}})
    text = stream.getvalue()
    assert "OSError: disk full while storing for Bearer <redacted>" in text
    assert "key=<redacted>" in text and SECRET not in text


def test_json_lines_are_filtered_too():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        logs.setup("info", "json", stream=stream, secrets=[SECRET])
        try:
            raise LineTooLong(f"X-API-Key: {SECRET}".encode(), 8190)
        except LineTooLong:
            logging.getLogger("aiohttp.server").exception("Error handling request from %s", "198.51.100.9")
        logging.getLogger("exporter").error("boom %s", SECRET)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "malformed request refused: LineTooLong: Got more than 8190 bytes when reading"
    assert first["level"] == "warning" and "stack" not in first
    assert second["msg"] == "boom <redacted>"
