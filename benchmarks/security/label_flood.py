"""Attack: a flood of ``api_call`` events with random codes, methods and routes (issue 19, items 5 and 6).

Sends ``--events`` events (default 20,000, in batches of 1,000) to a real
exporter over 127.0.0.1 with its ingest token: random tier, method and
status code (100..599), and routes that are templates made of random words,
raw paths with ids in them (numbers, hex, UUIDs, e-mails,
``raw-user-<name>-<n>``), and the issue's ``/users/raw-user-carol-99``.
Then reports, from one scrape: series per family against its budget, the
overflow counts, the size of ``/metrics``, the server's RSS, and whether
any id that was sent appears in a label.

    flock /tmp/clary-bench.lock .venv/bin/python -m benchmarks.security.label_flood [--tree /tmp/base-1c80776]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import string
import time
import uuid
from collections import defaultdict
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.security.exporter_process import (
    INGEST_TOKEN,
    Exporter,
    add_tree_argument,
    exporter,
)
from exporter.catalog import CATALOG, METHODS, TIERS

ISSUE_ID = "raw-user-carol-99"
BUDGET = {spec.name: spec.budget for spec in CATALOG}
FAMILY_OF = {sample: spec.name for spec in CATALOG for sample in spec.exposed_names}


def random_event(rng: random.Random, ids: set[str]) -> dict:
    word = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9)))
    raw_id = rng.choice((
        str(rng.randint(1, 10**9)), f"{rng.getrandbits(64):016x}", str(uuid.UUID(int=rng.getrandbits(128))),
        f"{word}{rng.randint(1, 999)}@example.com", f"raw-user-{word}-{rng.randint(1, 99)}",
    ))
    kind = rng.random()
    if kind < 0.4:
        route = f"/api/v1/{word}/{{id}}"  # a template: what a well-behaved client sends
    else:
        route = f"/api/v1/{word}/{raw_id}"  # a raw path: the ids must not reach a label
        ids.add(raw_id)
    return {"type": "api_call", "tier": rng.choice(TIERS), "method": rng.choice(METHODS), "route": route,
            "code": rng.randint(100, 599), "duration_seconds": round(rng.random(), 4)}


def flood(served: Exporter, events: int, batch: int, seed: int) -> tuple[set[str], dict[str, int], float]:
    """Send the events; returns the raw ids sent, accepted/rejected totals and the seconds it took."""
    rng = random.Random(seed)
    ids = {ISSUE_ID}
    totals = {"accepted": 0, "rejected": 0}
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
    start = time.perf_counter()
    first = {"type": "api_call", "tier": "lite", "method": "GET", "route": f"/users/{ISSUE_ID}", "code": 200,
             "duration_seconds": 0.1}
    for sent in range(0, events, batch):
        items = [random_event(rng, ids) for _ in range(min(batch, events - sent))]
        if sent == 0:
            items[0] = first
        conn.request("POST", "/api/v1/events", json.dumps({"events": items}), headers)
        resp = conn.getresponse()
        body = json.loads(resp.read())
        if resp.status != 200:
            raise SystemExit(f"POST /api/v1/events answered {resp.status}: {body}")
        totals["accepted"] += body["accepted"]
        totals["rejected"] += body["rejected"]
    conn.close()
    return ids, totals, time.perf_counter() - start


def rss_mib(served: Exporter) -> float:
    for line in Path(f"/proc/{served.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def scrape(served: Exporter) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return text


def analyse(text: str, ids: set[str]) -> dict:
    series: dict[str, set[tuple]] = defaultdict(set)
    overflow: dict[tuple[str, str], float] = {}
    leaked: set[str] = set()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name = FAMILY_OF.get(s.name)
            if name is None:
                continue
            series[name].add(tuple(sorted((k, v) for k, v in s.labels.items() if k != "le")))
            if name == "clary_exporter_label_overflow_total" and s.value:
                overflow[s.labels["metric"], s.labels["label"]] = s.value
            route = s.labels.get("route")
            if route is not None:
                leaked |= ids.intersection(route.split("/"))
    return {"series": {name: len(labels) for name, labels in series.items()}, "overflow": overflow,
            "leaked": leaked}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_tree_argument(parser)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000, help="events per POST (the exporter's default limit)")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    with exporter(args.tree) as served:
        rss_before = rss_mib(served)
        ids, totals, seconds = flood(served, args.events, args.batch, args.seed)
        text = scrape(served)
        rss_after = rss_mib(served)
    found = analyse(text, ids)
    print(f"tree: {args.tree}")
    print(f"events: {args.events} in batches of {args.batch}, {seconds:.1f} s; accepted {totals['accepted']}, "
          f"rejected {totals['rejected']}; {len(ids)} distinct raw ids in routes")
    print(f"/metrics: {len(text.encode()):,} bytes; server RSS {rss_before:.0f} MiB before, {rss_after:.0f} MiB after")
    print("\n| family | series | budget |\n|---|---:|---:|")
    over = 0
    for name, count in sorted(found["series"].items(), key=lambda item: -item[1]):
        if count > 50 or count > BUDGET[name]:
            print(f"| {name} | {count:,} | {BUDGET[name]:,} |")
        over += count > BUDGET[name]
    print(f"\nfamilies past their budget: {over}")
    for (metric, label), value in sorted(found["overflow"].items()):
        print(f"overflow {metric}{{label={label!r}}}: {value:,.0f}")
    leaked = found["leaked"]
    print(f"raw ids in a route label: {len(leaked)} of {len(ids)}"
          f"{' (e.g. ' + ', '.join(sorted(leaked)[:3]) + ')' if leaked else ''}; "
          f"{ISSUE_ID!r} in /metrics: {ISSUE_ID in text}")


if __name__ == "__main__":
    main()
