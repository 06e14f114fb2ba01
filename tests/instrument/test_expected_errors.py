"""``expected()``: a failure raised on purpose is one INFO line; every other exception keeps its stack.

The demo's ``/boom`` route raises one (tests/demo/test_admin_and_errors.py);
here the rule itself, on ``record_unhandled`` that both middlewares call.
"""

from __future__ import annotations

import logging

from exporter.instrument.errors import expected, record_unhandled
from exporter.logs import JsonFormatter, TextFormatter

LOGGER = logging.getLogger("tests.instrument.unhandled")


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:  # noqa: BLE001 - the test wants the traceback attached
        return caught


def test_an_expected_error_is_one_info_line_without_a_stack(rec, registry, caplog):
    caplog.set_level(logging.DEBUG)
    exc = _raised(expected(RuntimeError("fails on purpose, key-abcdef"), "tests.planned"))
    error_id = record_unhandled(rec, LOGGER, exc, "/boom", "GET", "lite", secrets=("key-abcdef",))
    records = caplog.records
    assert len(records) == 1
    record = records[0]
    assert (record.name, record.levelno, record.getMessage()) == ("tests.planned", logging.INFO,
                                                                   "deliberate error (expected)")
    assert record.exc_info is None
    assert record.fields == {"error_id": error_id, "error_type": "RuntimeError",
                             "error": "fails on purpose, [redacted]",
                             "route": "/boom", "method": "GET", "tier": "lite", "deliberate": True}
    for rendered in (TextFormatter().format(record), JsonFormatter().format(record)):
        assert "\n" not in rendered and "Traceback" not in rendered and "key-abcdef" not in rendered
    # Counted like any unhandled exception, under its own type.
    assert registry.get_sample_value(
        "clary_errors_total", {"tier": "lite", "error_type": "RuntimeError", "route": "/boom"}) == 1


def test_the_mark_is_on_the_instance_with_a_default_logger(rec, caplog):
    caplog.set_level(logging.DEBUG)
    marked = expected(ValueError("x"))
    assert type(marked) is ValueError
    record_unhandled(rec, LOGGER, _raised(marked), "/r", "GET", "lite")
    record_unhandled(rec, LOGGER, _raised(ValueError("y")), "/r", "GET", "lite")  # same type, not marked
    assert [(r.name, r.levelno) for r in caplog.records] == [("exporter.instrument", logging.INFO),
                                                             (LOGGER.name, logging.ERROR)]


def test_any_other_exception_still_logs_an_error_with_its_stack(rec, caplog):
    caplog.set_level(logging.DEBUG)
    error_id = record_unhandled(rec, LOGGER, _raised(RuntimeError("real failure")), "/r", "POST", "lite")
    [record] = caplog.records
    assert (record.name, record.levelno, record.getMessage()) == (LOGGER.name, logging.ERROR, "unhandled exception")
    assert record.exc_info and record.exc_info[0] is RuntimeError and record.fields["error_id"] == error_id
    assert "deliberate" not in record.fields
    assert "Traceback" in TextFormatter().format(record) and "RuntimeError: real failure" in \
        JsonFormatter().format(record)
