"""Three replicas, one PostgreSQL, one Prometheus (file_sd): several replicas, one truth (issue 18 part 6).

The test client is the load balancer: requests go round robin, one that is
not acknowledged (refused, reset, 5xx) is retried on the next replica, and
only a 2xx counts. Replica 2 is SIGKILLed mid-run and started again on the
same port and database. The module fixture runs the whole flow once and
records what it saw; each test asserts one guarantee, so a run names every
guarantee that does not hold.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import yaml

from exporter.api.notify import Notifier
from tests import postgres, support
from tests.e2e.replicas import Replica, RoundRobin, started, webhook_counter

pytestmark = pytest.mark.e2e

TIERS = ("lite", "standard", "professional")
USERS = 3000
SECRET = "scale-out-hmac-secret-0123456789"
INGEST = "scale-out-ingest-token-0123456789"
ADMIN = {"Authorization": "Bearer scale-out-admin-token-0123456789"}
INGEST_AUTH = {"Authorization": f"Bearer {INGEST}"}
FEEDBACK, URGENT = 150, 15
BATCH = 100
PROPAGATION = 1.0  # deletion, opt-out and consent reach every replica within this (issue 18 part 2)
DELETED, OPTED_OUT, WITHDRAWN = USERS - 10, USERS - 11, USERS - 12  # users of the pool, seen by the sketches
# Only the privacy steps send activity for these two: none of theirs is left in another replica's buffer (5 s)
# to be written between the "before" and "after" exports.
QUIET = {OPTED_OUT, WITHDRAWN}


def user(i: int) -> str:
    return f"so-user-{i:04d}"


def tier(i: int) -> str:
    return TIERS[i % 3]  # one tier per user: a user in two tiers would count twice in the sum over tiers


# API keys: two per tier, their users from the pool (in that tier); one belongs to the user deleted later.
KEYS = {f"scale-out-key-{i:04d}": {"tier": tier(i), "user": user(i)} for i in (0, 1, 2, 3, 4, 5, DELETED)}
PRO_KEYS = [key for key, who in KEYS.items() if who["tier"] == "professional" and who["user"] != user(DELETED)]


def action(i: int, event_id: str) -> dict:
    return {"id": event_id, "type": "user_action", "tier": tier(i), "action": "upload", "user_id": user(i)}


def error_event(i: int, error_id: str) -> dict:
    return {"type": "error", "tier": tier(i), "error_id": error_id, "error_type": "ValueError",
            "route": "/api/v1/documents/{id}", "message": "page out of range", "user_id": user(i)}


def jobs(run: str) -> list[tuple[str, dict, dict, list[int]]]:
    """Every request of the run, interleaved: (path, body, headers, users of the batch)."""
    batches = []
    for rotation, shift in enumerate((0, USERS // 3)):  # every user twice, in batches on different turns
        order = [i for n in range(USERS) if (i := (n + shift) % USERS) not in QUIET]
        for b in range(0, USERS, BATCH):
            users = order[b:b + BATCH]
            body = {"events": [action(i, f"{run}-{rotation}-{i}") for i in users]}
            batches.append(("/api/v1/events", body, INGEST_AUTH, users))
    for b in range(6):
        users = [(b * 97 + k * 31) % USERS for k in range(10)] + ([DELETED] if b == 0 else [])
        body = {"events": [error_event(i, f"{run}-e{b}-{k}") for k, i in enumerate(users)]}
        batches.append(("/api/v1/events", body, INGEST_AUTH, []))
    feedback = []
    keys = sorted(KEYS)
    for n in range(FEEDBACK):
        if n % (FEEDBACK // URGENT) == 0:  # spread over the run: some are in flight when replica 2 is killed
            body = {"type": "bug", "rating": 1, "text": f"export {run} loses table {n} on page 3"}
            key = PRO_KEYS[n % len(PRO_KEYS)]
        else:
            body = {"type": ("general", "feature_request", "bug")[n % 3], "rating": 3 + n % 3,
                    "text": f"feedback {n} of {run}"}
            key = keys[n % len(keys)]
        feedback.append(("/api/v1/feedback", body, {"X-API-Key": key}, []))
    mixed, f = [], 0
    for n, batch in enumerate(batches):  # a feedback post or two between event batches
        mixed.append(batch)
        take = FEEDBACK * (n + 1) // len(batches) - f
        mixed += feedback[f:f + take]
        f += take
    return mixed


def write_config(tmp, hook_url: str):
    config = {"hmac_secret": SECRET, "ingest_tokens": [INGEST], "admin_token": ADMIN["Authorization"][7:],
              "api_keys": KEYS, "webhooks": [{"url": hook_url, "format": "json"}],
              "feedback_rate_per_minute": 0, "urgent_notify_limit": 1000,
              "collectors": {"system": False, "gpu": False}}
    (tmp / "clary.yml").write_text(yaml.safe_dump(config))
    return tmp / "clary.yml"


def activity_count(export: dict) -> int:
    return sum(row["count"] for row in export["activity"])


def export(client: RoundRobin, replica: int, i: int) -> dict:
    answer = client.request(f"/api/v1/users/{user(i)}/export", method="GET", headers=ADMIN, replica=replica)
    assert answer.status == 200 and answer.replica == replica, answer
    return answer.body


def act(client: RoundRobin, replica: int, i: int) -> None:
    body = {"events": [action(i, f"late-{uuid.uuid4()}")]}
    answer = client.request("/api/v1/events", body, INGEST_AUTH, replica=replica)
    assert answer.status == 200 and answer.replica == replica and answer.body["accepted"] == 1, answer


def run_traffic(client: RoundRobin, replicas: list[Replica], run: str, seen: dict) -> dict:
    """All requests, four at a time; replica 2 is SIGKILLed after 45 % and restarted at once."""
    work = jobs(run)
    acked_feedback, acked_urgent, deleted, batches = set(), set(), set(), []

    def send(job):
        path, body, headers, users = job
        answer = client.request(path, body, headers)
        if not 200 <= answer.status < 300:
            return
        if path == "/api/v1/feedback":
            acked_feedback.add(answer.body["id"])
            if KEYS[headers["X-API-Key"]]["user"] == user(DELETED):
                deleted.add(answer.body["id"])
            if answer.body["urgent"]:
                acked_urgent.add(answer.body["id"])
        else:
            assert answer.body["rejected"] == 0, answer.body["errors"][:3]
            batches.append((answer.replica, body))
            for i in users:
                seen.setdefault(i, set()).add(answer.replica)

    kill_at, back_at = int(len(work) * 0.45), int(len(work) * 0.65)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(send, work[:kill_at]))
        killed_at = time.monotonic()
        replicas[1].kill()
        replicas[1].start()  # same port, data dir and database; up again after its start-up
        list(pool.map(send, work[kill_at:back_at]))
        before = client.acknowledged[1]
        replicas[1].wait_ready()
        list(pool.map(send, work[back_at:]))
    return {"feedback": acked_feedback, "urgent": acked_urgent, "deleted_feedback": deleted, "batches": batches,
            "after_restart": client.acknowledged[1] - before, "jobs": len(work), "killed_at": killed_at}


def privacy_steps(client: RoundRobin) -> dict:
    """Deletion via replica 1, opt-out via 2, consent withdrawal via 1; each checked on another replica."""
    found = {}
    # Replica 3 holds activity and an error of the user in its buffers when replica 1 deletes them.
    act(client, 2, DELETED)
    answer = client.request("/api/v1/events", {"events": [error_event(DELETED, "late-deleted-error")]},
                            INGEST_AUTH, replica=2)
    assert answer.status == 200 and answer.body["accepted"] == 1, answer
    answer = client.request(f"/api/v1/users/{user(DELETED)}", method="DELETE", headers=ADMIN, replica=0)
    assert answer.status == 200 and answer.replica == 0, answer
    found["deleted_removed"] = answer.body["total"]
    time.sleep(PROPAGATION)
    found["deleted_export"] = export(client, 2, DELETED)

    act(client, 2, OPTED_OUT)  # seen (and counted as active) before the opt-out
    before = activity_count(export(client, 2, OPTED_OUT))
    answer = client.request(f"/api/v1/users/{user(OPTED_OUT)}/opt-out", headers=ADMIN, replica=1)
    assert answer.status == 200 and answer.replica == 1 and answer.body["opted_out"] is True, answer
    time.sleep(PROPAGATION)
    act(client, 2, OPTED_OUT)
    found["opted_out"] = (before, export(client, 2, OPTED_OUT))

    act(client, 1, WITHDRAWN)
    before = activity_count(export(client, 1, WITHDRAWN))
    answer = client.request(f"/api/v1/users/{user(WITHDRAWN)}/consent", {"state": "withdrawn", "policy_version": "1"},
                            ADMIN, replica=0)
    assert answer.status == 200 and answer.replica == 0 and answer.body["tracked"] is False, answer
    time.sleep(PROPAGATION)
    act(client, 1, WITHDRAWN)
    found["withdrawn"] = (before, export(client, 1, WITHDRAWN))
    return found


def listed_feedback(client: RoundRobin, replica: int) -> set[str]:
    ids, cursor = set(), None
    for _ in range(20):
        query = "?limit=500" + (f"&cursor={cursor}" if cursor else "")
        answer = client.request("/api/v1/feedback" + query, method="GET", headers=ADMIN, replica=replica)
        assert answer.status == 200 and answer.replica == replica, answer
        ids |= {item["id"] for item in answer.body["items"]}
        cursor = answer.body["next_cursor"]
        if not cursor:
            return ids
    raise AssertionError("more than 20 pages of feedback")


DISTINCT = 'sum(max by (tier, window) (clary_active_users{window="1h"}))'


def outbox_rows(url: str) -> int:
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]


def settle(prom: support.Prometheus, hook, urgent: set[str], url: str, timeout: float = 100) -> dict:
    """Wait (bounded) until the outbox drained, the distinct count converged and all three targets are up.

    Usually seconds. The bound outlasts a notifier's lease (80 s with the defaults, exporter.api.notify):
    a report the SIGKILLed replica had claimed but not yet sent is due again only when its lease ends.
    """
    deadline = time.monotonic() + timeout
    while True:
        distinct = prom.query(DISTINCT)
        value = float(distinct[0]["value"][1]) if distinct else 0.0
        up = len(prom.query('up{job="clary-scale-out"} == 1'))
        converged = abs(value - USERS) <= 0.02 * USERS
        done = urgent <= set(hook.posts) and outbox_rows(url) == 0 and converged and up == 3
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    time.sleep(2)  # a second delivery of a report, if any, has time to arrive
    value = float((prom.query(DISTINCT) or [{"value": [0, "0"]}])[0]["value"][1])
    per_replica = {r["metric"]["instance"]: float(r["value"][1])
                   for r in prom.query('sum by (instance) (clary_active_users{window="1h"})')}
    return {"distinct": value, "per_replica": per_replica, "posts": dict(hook.posts),
            "outbox": outbox_rows(url), "deliveries": {fid: list(posts) for fid, posts in hook.deliveries.items()},
            "up": len(prom.query('up{job="clary-scale-out"} == 1'))}


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scale-out")
    url, run = postgres.fresh_database(), uuid.uuid4().hex[:8]
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(postgres.server().drop_database, url)
        hook = cleanup.enter_context(webhook_counter())
        config = write_config(tmp, hook.url)
        replicas = [Replica(n, config, tmp / f"data-{n}", url, tmp) for n in range(3)]
        (tmp / "targets.json").write_text(json.dumps([{"targets": [r.target for r in replicas]}]))
        prom_config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                       "scrape_configs": [{"job_name": "clary-scale-out", "file_sd_configs": [
                           {"files": [str(tmp / "targets.json")], "refresh_interval": "1s"}]}]}
        # Prometheus first: its ~5 s until the first scrape overlaps the replicas' start-up.
        with support.prometheus_from(prom_config, tmp / "prometheus") as prom, started(replicas):
            client = RoundRobin([r.url for r in replicas])
            seen: dict[int, set[int]] = {}
            traffic = run_traffic(client, replicas, run, seen)
            replica, body = traffic["batches"][0]
            resent = client.request("/api/v1/events", body, INGEST_AUTH, replica=(replica + 1) % 3)
            found = privacy_steps(client)
            listed = {n: listed_feedback(client, n) for n in range(3)}
            settled = settle(prom, hook, traffic["urgent"], url)
    return {**traffic, **found, **settled, "listed": listed, "seen": seen, "resent": (len(body["events"]), resent),
            "failovers": client.failovers, "starts": [r.starts for r in replicas]}


def test_the_run_exercised_a_kill_and_overlapping_replicas(outcome):
    """Without this the other checks could pass vacuously."""
    assert outcome["starts"] == [1, 2, 1]
    assert outcome["failovers"] >= 1  # requests to the killed replica went elsewhere
    assert outcome["after_restart"] >= 1  # and the restarted one served again
    assert len(outcome["urgent"]) == URGENT and len(outcome["feedback"]) == FEEDBACK
    assert len(outcome["seen"]) == USERS - len(QUIET)
    per_replica = [sum(1 for where in outcome["seen"].values() if n in where) for n in range(3)]
    assert all(0.3 * USERS < count < 0.9 * USERS for count in per_replica), per_replica  # each sees a part


def test_no_acknowledged_feedback_is_lost(outcome):
    kept, deleted = outcome["feedback"] - outcome["deleted_feedback"], outcome["deleted_feedback"]
    assert deleted and kept
    for replica, ids in outcome["listed"].items():
        assert (len(kept - ids), len(deleted & ids)) == (0, 0), replica  # only the deleted user's rows went


def test_every_urgent_report_is_delivered_exactly_once(outcome):
    """Once per receiver, by the idempotency key; a second post only in the documented gap.

    ``exporter.api.notify``: a replica SIGKILLed between the receiver's 2xx and
    the commit of that row's delete leaves the row to be sent again, with the
    same ``X-Clary-Delivery`` key, when its lease ends. So a report may arrive
    twice only if its first post came before the kill and the repeat after it;
    a repeat anywhere else (two replicas holding one row, a retry of a
    delivered row) fails this test.
    """
    deliveries, killed_at = outcome["deliveries"], outcome["killed_at"]
    assert outcome["outbox"] == 0  # drained: nothing claimed and left undelivered
    assert set(deliveries) == outcome["urgent"]  # every urgent report reached the receiver, nothing else did
    keys = {fid: {key for key, _ in posts} for fid, posts in deliveries.items()}
    assert all(len(one) == 1 for one in keys.values()), keys  # one delivery (outbox row) per report
    repeated = {fid: [at - killed_at for _, at in posts] for fid, posts in deliveries.items() if len(posts) > 1}
    assert all(len(times) == 2 and times[0] < 0 < times[1] for times in repeated.values()), repeated
    assert len(repeated) <= Notifier(None, []).concurrency, repeated  # at most the rows it was sending at once


def test_a_user_deleted_via_one_replica_is_gone_on_another(outcome):
    assert outcome["deleted_removed"] >= 1  # there was something to delete
    export = outcome["deleted_export"]
    assert (export["feedback"], export["activity"], export["error_records"]) == ([], [], [])


def test_an_opt_out_via_one_replica_stops_tracking_on_another_within_a_second(outcome):
    before, export = outcome["opted_out"]
    assert before >= 1 and export["opted_out"] is True
    assert activity_count(export) == before  # the activity sent to replica 3 afterwards was not kept
    assert export["tracked"] is False


def test_a_consent_withdrawal_via_one_replica_holds_on_another_within_a_second(outcome):
    before, export = outcome["withdrawn"]
    assert before >= 1 and export["consent"] == "withdrawn"
    assert activity_count(export) == before
    assert export["tracked"] is False


def test_distinct_users_are_counted_once_for_the_deployment(outcome):
    assert abs(outcome["distinct"] - USERS) <= 0.02 * USERS, (outcome["distinct"], outcome["per_replica"])


def test_a_batch_retried_on_another_replica_is_not_counted_twice(outcome):
    size, answer = outcome["resent"]
    assert answer.status == 200, answer
    assert (answer.body["accepted"], answer.body["duplicates"]) == (0, size)


def test_prometheus_sees_three_replicas_up(outcome):
    assert outcome["up"] == 3
