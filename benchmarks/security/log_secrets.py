"""Attack: secrets in malformed, oversized and invalid requests, and what reaches the log (issue 19, item 4).

A real exporter process (text logs, level debug) with known secrets: an
ingest token, an admin token, an API key, the HMAC secret; and a user id and
a feedback text that requests carry. It gets well-formed requests that are
refused (oversized, invalid, wrong credentials: JSON 4xx), then malformed
ones that aiohttp's parser refuses (a control character in Authorization,
X-API-Key, the request line or a header name; a header line over 8190
bytes), each carrying secrets, then ``--flood`` more malformed ones.
Reported: log lines and ERROR lines per malformed request, the lines the
flood wrote, and which secrets the log holds.
``tests/server/test_log_secrets.py`` runs the same attack and asserts on it.

    flock /tmp/clary-bench.lock .venv/bin/python -m benchmarks.security.log_secrets [--tree /tmp/base-1c80776]
"""

from __future__ import annotations

import argparse
import json
import socket
from dataclasses import dataclass
from pathlib import Path

from benchmarks.security.exporter_process import add_tree_argument, exporter, raw_request

INGEST_TOKEN = "IngestTokenSecret-5d1c8e"
ADMIN_TOKEN = "AdminTokenSecret-90ab7f"
API_KEY = "ApiKeySecret-3e6f21"
USER = "UserIdSecret-77c0"
TEXT = "FeedbackTextSecret-a41b"
HMAC_SECRET = "HmacSecretValue-0123456789"
# What must not be in the log: each secret's halves too (a control character splits some of them).
SECRETS = ("IngestTokenSecret", "5d1c8e", "AdminTokenSecret", "90ab7f", "ApiKeySecret", "3e6f21",
           "UserIdSecret", "77c0", "FeedbackTextSecret", "a41b", "HmacSecretValue")
FEEDBACK = json.dumps({"type": "bug", "rating": 1, "text": TEXT}).encode()
CLOSE = {"Connection": "close"}


def _http(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"",
          length: int | None = None) -> bytes:
    return raw_request(method, path, {**CLOSE, **(headers or {})}, body, len(body) if length is None else length)


# Refused by aiohttp's parser (400); before the fix each wrote ~12 ERROR lines quoting the header line.
MALFORMED = (
    _http("POST", "/api/v1/events", {"Authorization": f"Bearer {INGEST_TOKEN[:12]}\x01{INGEST_TOKEN[12:]}"}),
    _http("POST", "/api/v1/feedback", {"X-API-Key": f"{API_KEY[:8]}\x01{API_KEY[8:]}"}),
    _http("DELETE", f"/api/v1/users/{USER}", {"Authorization": f"Bearer {ADMIN_TOKEN}\x01"}),
    _http("POST", f"/api/v1/users/{USER}\x01/opt-out", {"Authorization": f"Bearer {ADMIN_TOKEN}"}),
    _http("POST", "/api/v1/feedback", {"X-API-Key": API_KEY + "A" * 9000}),  # a header line over 8190 bytes
    _http("GET", "/metrics", {f"X-{TEXT}\x01": API_KEY}),
)
# Well-formed HTTP, refused with JSON (or accepted and partly rejected): never logged.
REFUSED = (
    ("413", _http("POST", "/api/v1/feedback", {"X-API-Key": API_KEY}, FEEDBACK + b" " * (2 * 1024 * 1024))),
    ("400", _http("POST", "/api/v1/feedback", {"X-API-Key": API_KEY},
                  json.dumps({"type": "bug", "rating": 9, "text": TEXT}).encode())),
    ("401", _http("POST", "/api/v1/feedback", {"X-API-Key": API_KEY + "-wrong"}, FEEDBACK)),
    ("400", _http("POST", "/api/v1/feedback", {"X-API-Key": API_KEY, "Content-Encoding": "gzip"}, FEEDBACK)),
    ("200", _http("POST", "/api/v1/events", {"Authorization": f"Bearer {INGEST_TOKEN}"}, json.dumps(
        {"events": [{"type": "user_action", "tier": "lite", "action": 7, "user_id": USER}]}).encode())),
    ("401", _http("POST", "/api/v1/events", {"Authorization": f"Bearer {ADMIN_TOKEN}"}, b'{"events": []}')),
    ("401", _http("DELETE", f"/api/v1/users/{USER}", {"Authorization": f"Bearer {INGEST_TOKEN}"})),
    ("401", _http("POST", f"/api/v1/users/{USER}/opt-out", {"Authorization": f"Basic {API_KEY}"})),
    ("404", _http("GET", f"/api/v1/users/{USER}/{TEXT}?key={API_KEY}", {"X-API-Key": API_KEY})),
)
# The client hangs up mid-body: no answer can reach it, and nothing may be logged.
CUT_SHORT = _http("POST", "/api/v1/feedback", {"X-API-Key": API_KEY}, FEEDBACK[:20], length=len(FEEDBACK))


def send(port: int, raw: bytes, half_close: bool = False) -> bytes:
    """The server's whole answer (it closes the connection); ``half_close`` ends the request early instead."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def status(answer: bytes) -> str:
    parts = answer.split(b"\r\n", 1)[0].split(b" ")
    return parts[1].decode() if len(parts) > 1 else "no answer"


@dataclass
class Outcome:
    refused: list[str]  # statuses of REFUSED, in order
    malformed: list[str]  # statuses of MALFORMED
    malformed_log: list[str]  # what MALFORMED added to the log
    flood_lines: int  # log lines the flood added
    log: str  # the whole log, shutdown included

    @property
    def secrets_found(self) -> list[str]:
        return [secret for secret in SECRETS if secret in self.log]


def attack(tree: Path, flood: int) -> Outcome:
    env = {"CLARY_HMAC_SECRET": HMAC_SECRET, "CLARY_INGEST_TOKENS": INGEST_TOKEN, "CLARY_ADMIN_TOKEN": ADMIN_TOKEN,
           "CLARY_LOG_LEVEL": "debug"}
    with exporter(tree, env, {"api_keys": {API_KEY: {"tier": "lite", "user": USER}}}) as served:
        refused = [status(send(served.port, raw)) for _, raw in REFUSED]
        send(served.port, CUT_SHORT, half_close=True)
        start = len(served.log().splitlines())
        malformed = [status(send(served.port, raw)) for raw in MALFORMED]
        malformed_log = served.log().splitlines()[start:]
        before_flood = len(served.log().splitlines())
        for index in range(flood):
            send(served.port, MALFORMED[index % len(MALFORMED)])
        flood_lines = len(served.log().splitlines()) - before_flood
    return Outcome(refused, malformed, malformed_log, flood_lines, served.log())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_tree_argument(parser)
    parser.add_argument("--flood", type=int, default=100, help="malformed requests in the flood (default 100)")
    args = parser.parse_args()
    outcome = attack(args.tree, args.flood)
    per_request = len(outcome.malformed_log) / len(MALFORMED)
    errors = sum(" ERROR " in line for line in outcome.malformed_log) / len(MALFORMED)
    print(f"tree {args.tree}")
    print(f"refused requests: {', '.join(outcome.refused)}; malformed requests: {', '.join(outcome.malformed)}")
    print(f"log lines per malformed request: {per_request:.1f} ({errors:.1f} at ERROR)")
    print(f"log lines from {args.flood} more malformed requests: {outcome.flood_lines}")
    print(f"secrets in the log: {len(outcome.secrets_found)} of {len(SECRETS)} {outcome.secrets_found}")


if __name__ == "__main__":
    main()
