"""What the dashboard end-to-end tests share: the exporter + Prometheus (with the bundle's rules) they feed
through the public events API, every panel query with its unit, and range queries (heatmaps)."""

from __future__ import annotations

import contextlib
import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from dashboards.build import all_dashboards, render
from dashboards.queries import iter_panels, substitute
from tests import support

RULES = sorted((support.ROOT / "alerts" / "rules").glob("*.yml"))
INGEST_TOKEN = "e2e-dashboards-ingest-token"
HMAC_SECRET = "e2e-dashboards-secret-0123456789"


@dataclass(frozen=True)
class PanelQuery:
    uid: str
    title: str
    unit: str
    legend: str
    expr: str  # Grafana variables left in place


_RECORDED = re.compile(r"(?<![\w:])[a-z_]+:clary_[a-z0-9_]+:[a-z0-9_]+")


def dashboard_rules(dest: Path) -> list[Path]:
    """The bundle's recording rules that the panels read (and those they are computed from), in one file
    under ``dest``: what a Prometheus behind the dashboards needs, without the evaluation cost of the alerts."""
    wanted = {name for q in panel_queries() for name in _RECORDED.findall(q.expr)}
    groups = [group for path in RULES for group in yaml.safe_load(path.read_text())["groups"]]
    exprs = {rule["record"]: rule["expr"] for group in groups for rule in group["rules"] if "record" in rule}
    todo = list(wanted)
    while todo:
        for inner in _RECORDED.findall(exprs[todo.pop()]):
            if inner not in wanted:
                wanted.add(inner)
                todo.append(inner)
    kept = [{**group, "rules": [r for r in group["rules"] if r.get("record") in wanted]} for group in groups]
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [group for group in kept if group["rules"]]}, sort_keys=False))
    return [path]


def panel_queries() -> list[PanelQuery]:
    """Every target of every dashboard (collapsed rows included) with its panel's unit."""
    out = []
    for built in all_dashboards():
        data = json.loads(render(built))
        for panel in iter_panels(data["panels"]):
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
            for target in panel.get("targets") or []:
                out.append(PanelQuery(data["uid"], panel["title"], unit, target["legendFormat"], target["expr"]))
    return out


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def send(base: str, events: list[dict]) -> None:
    status, result = post(f"{base}/api/v1/events", {"events": events}, {"Authorization": f"Bearer {INGEST_TOKEN}"})
    assert status == 200 and result["accepted"] == len(events), result


def values(result: list[dict]) -> list[float]:
    """The sample values of an instant query's result (``NaN``, ``+Inf`` parse as such)."""
    return [float(r["value"][1]) for r in result]


def finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


def query_range(prom: support.Prometheus, expr: str, start: float, end: float, step: float) -> list[dict]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    status, body = support.http_get(f"{prom.url}/api/v1/query_range?{params}")
    payload = json.loads(body)
    assert status == 200 and payload["status"] == "success", payload
    return payload["data"]["result"]


@dataclass
class Stack:
    exporter_urls: list[str]
    prometheus: support.Prometheus


@contextlib.contextmanager
def stack(tmp: Path, replicas: int = 1) -> Iterator[Stack]:
    """``replicas`` exporters (no demo, one HMAC secret), scraped every second by one Prometheus that loads
    the bundle's rules (evaluated every second)."""
    ports = [support.free_port() for _ in range(replicas)]
    targets = [f"{support.LOOPBACK}:{port}" for port in ports]
    with contextlib.ExitStack() as stack_:
        # Prometheus first: its ~5 s until the first scrape overlaps the exporters' start-up.
        prom = stack_.enter_context(support.prometheus(targets, rule_files=RULES))
        for i, port in enumerate(ports):
            config = tmp / f"clary-{i}.yml"
            config.write_text(yaml.safe_dump({"hmac_secret": HMAC_SECRET, "data_dir": str(tmp / f"data-{i}")}))
            stack_.enter_context(support.exporter(port, "--config", str(config), log_path=tmp / f"exporter-{i}.log",
                                                  env={"CLARY_INGEST_TOKENS": INGEST_TOKEN}))
        support.wait_until(lambda: len(prom.query('up{job="clary-exporter"} == 1')) == replicas,
                           timeout=30, interval=0.2, what="every replica scraped")
        yield Stack([f"http://{t}" for t in targets], prom)


def substituted(query: PanelQuery, rate_interval: str = "1m", range_: str = "5m") -> str:
    return substitute(query.expr, rate_interval, range_=range_)
