"""No secret reaches the log, whatever a client sends; a malformed request writes one line at most.

Runs the attack of benchmarks/security/log_secrets.py against this tree: a
real ``clary-exporter`` process with known secrets (ingest and admin tokens,
an API key, the HMAC secret) gets oversized, invalid and malformed requests
carrying them and a user id and a feedback text; its log is then searched
for every one of them.
"""

from __future__ import annotations

import re

import pytest

from benchmarks.security import log_secrets
from exporter.logs import MALFORMED_BURST
from tests.support import ROOT

pytestmark = pytest.mark.e2e


def test_secrets_never_reach_the_log_and_malformed_requests_log_one_line():
    flood = 2 * MALFORMED_BURST
    outcome = log_secrets.attack(ROOT, flood)
    assert outcome.refused == [expected for expected, _ in log_secrets.REFUSED]
    assert outcome.malformed == ["400"] * len(log_secrets.MALFORMED)
    assert outcome.secrets_found == [], outcome.log

    assert len(outcome.malformed_log) <= len(log_secrets.MALFORMED), "\n".join(outcome.malformed_log)
    assert all(re.search(r" WARNING +aiohttp\.server: malformed request refused: \w+: [A-Za-z]", line)
               for line in outcome.malformed_log), "\n".join(outcome.malformed_log)
    # Past the burst they are counted, not logged; the count is logged at shutdown.
    lines = [line for line in outcome.log.splitlines() if "malformed request refused" in line]
    assert len(lines) <= MALFORMED_BURST
    assert outcome.flood_lines < flood
    left_out = re.search(r"(\d+) malformed requests were refused without a log line", outcome.log)
    assert left_out and int(left_out.group(1)) >= flood + len(log_secrets.MALFORMED) - MALFORMED_BURST
