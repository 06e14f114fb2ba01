"""Prometheus configs of the bundle: promtool, and the scale profile for real.

Path layout. Every config refers to its rules as ``rules/*.yml`` and to
file_sd targets as ``targets/...``, relative to the config file's directory:
in the container that is /etc/prometheus with ./alerts/rules mounted at
/etc/prometheus/rules. promtool resolves them the same way, so each test
copies the config into a temp dir next to a ``rules`` symlink to alerts/rules
(and ``targets`` to the example targets) -- the container's layout, built by
``exporter.stack.write_prometheus_layout`` for prometheus.yml -- and checks
there. The rule files are therefore really loaded and checked, not skipped:
each test asserts promtool reported every rule file with its rule count.

Debian's Prometheus 2.42 is built without Kubernetes service discovery. For
scale/kubernetes-sd.yml, promtool must either pass (an upstream build) or fail
only on the ``kubernetes_sd_configs`` fields; then the same file is checked
with those blocks swapped for file_sd, and a real Prometheus applies its
relabelling to targets carrying the pod metadata Kubernetes SD would attach.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from exporter.stack import write_prometheus_layout
from tests import support
from tests.support import ROOT

PROM_DIR = ROOT / "provisioning" / "prometheus"
SCALE_DIR = PROM_DIR / "scale"
RULES_DIR = ROOT / "alerts" / "rules"
CONFIGS = sorted([PROM_DIR / "prometheus.yml", *SCALE_DIR.glob("*.yml")])
K8S_ROLES = {"node", "service", "pod", "endpoints", "endpointslice", "ingress"}


def _rule_counts() -> dict[str, int]:
    return {
        p.name: sum(len(g["rules"]) for g in yaml.safe_load(p.read_text())["groups"])
        for p in sorted(RULES_DIR.glob("*.yml"))
    }


def _layout(config_text: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "prometheus.yml").write_text(config_text)
    (dest / "rules").symlink_to(RULES_DIR, target_is_directory=True)
    (dest / "targets").symlink_to(SCALE_DIR / "targets", target_is_directory=True)
    return dest / "prometheus.yml"


def _promtool(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([support.binary("promtool"), "check", "config", str(config)],
                          capture_output=True, text=True, timeout=60)


def _assert_rules_checked(output: str, config: dict) -> None:
    if not config.get("rule_files"):
        return
    for name, count in _rule_counts().items():
        assert re.search(rf"rules/{re.escape(name)}\s+SUCCESS: {count} rules found", output), (name, output)


def _swap_kubernetes_sd(config: dict, targets_file: str) -> dict:
    """kubernetes_sd_configs -> file_sd_configs, everything else as it is."""
    for section in [*(config.get("scrape_configs") or []),
                    *((config.get("alerting") or {}).get("alertmanagers") or [])]:
        blocks = section.pop("kubernetes_sd_configs", None)
        if blocks is None:
            continue
        for block in blocks:
            assert block["role"] in K8S_ROLES, block
            assert set(block) <= {"role", "namespaces", "selectors", "api_server", "attach_metadata",
                                  "kubeconfig_file", "tls_config", "authorization", "bearer_token_file"}, block
        section["file_sd_configs"] = [{"files": [targets_file]}]
    return config


def test_every_config_is_covered():
    names = {p.name for p in CONFIGS}
    assert {"prometheus.yml", "file-sd.yml", "kubernetes-sd.yml", "federation.yml",
            "remote-write-mimir.yml", "remote-write-thanos.yml", "remote-write-victoriametrics.yml"} <= names
    assert len(_rule_counts()) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(PROM_DIR)))
def test_promtool_check_config(path: Path, tmp_path: Path):
    text = path.read_text()
    config = yaml.safe_load(text)
    if path.name != "federation.yml":
        jobs = [job["job_name"] for job in config["scrape_configs"]]
        assert "clary-exporter" in jobs, "alerts and dashboards select job=clary-exporter"
        assert config["rule_files"] == ["rules/*.yml"]
        assert config["alerting"]["alertmanagers"]
    result = _promtool(_layout(text, tmp_path / "a"))
    output = result.stdout + result.stderr
    if result.returncode != 0 and "kubernetes_sd_configs not found" in output:
        # Debian's build lacks Kubernetes SD: every complaint must be about it ...
        complaints = [line for line in output.splitlines() if "not found in type" in line]
        assert complaints and all("kubernetes_sd_configs" in line for line in complaints), output
        # ... and the rest of the file must be valid.
        swapped = _swap_kubernetes_sd(config, "targets/clary-exporter-*.yml")
        result = _promtool(_layout(yaml.safe_dump(swapped), tmp_path / "b"))
        output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "is valid prometheus config file syntax" in output
    _assert_rules_checked(output, config)


def test_bundle_config_matches_compose_and_grafana():
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["clary-exporter"]["static_configs"][0]["targets"] == ["exporter:25279"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    datasource = yaml.safe_load((ROOT / "provisioning/datasources/prometheus.yaml").read_text())["datasources"][0]
    # Grafana's $__rate_interval assumes this scrape interval.
    assert datasource["jsonData"]["timeInterval"] == config["global"]["scrape_interval"] == "15s"


def test_stack_layout_swaps_only_addresses(tmp_path: Path):
    addresses = {"exporter": "127.0.0.1:1", "prometheus": "127.0.0.1:2", "alertmanager": "127.0.0.1:3"}
    path = write_prometheus_layout(ROOT, tmp_path, addresses)
    local = yaml.safe_load(path.read_text())
    bundle = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in local["scrape_configs"]}
    assert targets == {"clary-exporter": ["127.0.0.1:1"], "prometheus": ["127.0.0.1:2"], "alertmanager": ["127.0.0.1:3"]}
    # The compose replicas' DNS discovery is dropped (the local stack has none); nothing else changes.
    bundle_jobs = {job["job_name"]: job for job in bundle["scrape_configs"]}
    assert bundle_jobs["clary-exporter"]["dns_sd_configs"][0]["names"] == ["exporter-replica"]
    assert not any("dns_sd_configs" in job for job in local["scrape_configs"])
    for job in bundle["scrape_configs"]:
        job.pop("static_configs")
        job.pop("dns_sd_configs", None)
    for job in local["scrape_configs"]:
        job.pop("static_configs")
    bundle["alerting"] = local["alerting"] = None
    assert local == bundle
    assert (tmp_path / "rules").resolve() == RULES_DIR.resolve()


# --- the scale profile with real processes ------------------------------------
#
# One module fixture starts every Prometheus of this section at once, then the
# second replica: each Prometheus scrapes nothing for its first ~5 s (see
# tests/support.py), and those waits overlap instead of adding up. Each test
# then waits, bounded and polling, only for what it asserts.

REMOTE_WRITE_EXAMPLES = ["remote-write-mimir.yml", "remote-write-thanos.yml", "remote-write-victoriametrics.yml"]


def _run_prometheus(config: dict, workdir: Path, targets: list[dict] | None = None):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "rules").symlink_to(RULES_DIR, target_is_directory=True)
    if targets is not None:
        (workdir / "targets").mkdir()
        (workdir / "targets" / "clary-exporter-test.yml").write_text(yaml.safe_dump(targets))
    return support.prometheus_from(config, workdir)


def _fast(config: dict) -> dict:
    """Test-only: 1s intervals so the run takes seconds, not minutes."""
    config["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    config.pop("alerting", None)
    config.pop("remote_write", None)
    return config


class _Receiver:
    """A remote_write endpoint on 127.0.0.1 that records what arrives (headers, size)."""

    def __init__(self):
        import http.server
        import threading

        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, len(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((support.LOOPBACK, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Scale:
    replicas: list[str]
    cluster: support.Prometheus
    federation: support.Prometheus
    kubernetes: support.Prometheus
    remote_write: dict[str, tuple[_Receiver, str]]  # example -> (its receiver, the example's URL path)


def _kubernetes_targets(replicas: list[str]) -> list[dict]:
    """The metadata Kubernetes SD attaches to pods, for the replicas and one stranger."""
    pod = {"__meta_kubernetes_pod_label_app_kubernetes_io_name": "clary-exporter",
           "__meta_kubernetes_pod_container_port_name": "metrics",
           "__meta_kubernetes_pod_phase": "Running",
           "__meta_kubernetes_namespace": "clary",
           "__meta_kubernetes_pod_node_name": "node-1"}
    return [
        {"targets": [replicas[0]], "labels": {**pod, "__meta_kubernetes_pod_name": "clary-exporter-0"}},
        # Same pod, another container port: dropped.
        {"targets": [replicas[1]], "labels": {**pod, "__meta_kubernetes_pod_name": "clary-exporter-0",
                                              "__meta_kubernetes_pod_container_port_name": "http"}},
        # Another app: dropped.
        {"targets": ["127.0.0.1:1"], "labels": {**pod, "__meta_kubernetes_pod_name": "other-0",
                                                "__meta_kubernetes_pod_label_app_kubernetes_io_name": "other"}},
    ]


@pytest.fixture(scope="module")
def scale(demo_started, tmp_path_factory):
    """Two demo exporters (the session's and a second one) and every scale-profile Prometheus."""
    tmp = tmp_path_factory.mktemp("scale")
    port = support.free_port()
    replicas = [demo_started.exporter_target, f"{support.LOOPBACK}:{port}"]
    with contextlib.ExitStack() as stack:
        # scale/file-sd.yml: replicas found through file_sd, the bundle's rules.
        config = _fast(yaml.safe_load((SCALE_DIR / "file-sd.yml").read_text()))
        cluster = stack.enter_context(
            _run_prometheus(config, tmp / "cluster", [{"targets": replicas, "labels": {"region": "test"}}]))
        # scale/federation.yml: a global Prometheus federating the cluster one.
        config = _fast(yaml.safe_load((SCALE_DIR / "federation.yml").read_text()))
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": [urllib.parse.urlsplit(cluster.url).netloc]}]
        federation = stack.enter_context(_run_prometheus(config, tmp / "global"))
        # scale/kubernetes-sd.yml: its relabelling, applied to targets carrying pod metadata.
        config = _swap_kubernetes_sd(_fast(yaml.safe_load((SCALE_DIR / "kubernetes-sd.yml").read_text())),
                                     "targets/clary-exporter-*.yml")
        kubernetes = stack.enter_context(_run_prometheus(config, tmp / "k8s", _kubernetes_targets(replicas)))
        # Each remote_write example, pointed at a local receiver of its own.
        remote_write = {}
        for name in REMOTE_WRITE_EXAMPLES:
            config = yaml.safe_load((SCALE_DIR / name).read_text())
            (remote,) = config["remote_write"]
            original = urllib.parse.urlsplit(remote["url"])
            receiver = _Receiver()
            stack.callback(receiver.close)
            remote["url"] = f"http://{support.LOOPBACK}:{receiver.port}{original.path}"
            fast = _fast(config)
            fast["remote_write"] = [remote]
            fast["remote_write"][0].setdefault("queue_config", {})["batch_send_deadline"] = "1s"
            stack.enter_context(_run_prometheus(fast, tmp / name.removesuffix(".yml"), [{"targets": replicas}]))
            remote_write[name] = (receiver, original.path)
        # The second replica last: its start-up overlaps the Prometheus' first ~5 s.
        stack.enter_context(support.exporter(port, "--demo", "--demo-duration", "300", log_path=tmp / "replica.log"))
        yield Scale(replicas, cluster, federation, kubernetes, remote_write)


@pytest.fixture(scope="module")
def two_replicas(scale):
    return scale.replicas


@pytest.fixture(scope="module")
def cluster_prometheus(scale):
    """scale/file-sd.yml, once both replicas are up."""
    prom = scale.cluster
    support.wait_until(lambda: len(prom.query('up{job="clary-exporter"} == 1')) == 2,
                       timeout=30, interval=0.1, what="both replicas up")
    return prom


def test_file_sd_replicas_aggregate_by_tier(cluster_prometheus, two_replicas):
    prom = cluster_prometheus
    up = prom.query('up{job="clary-exporter"}')
    assert sorted(s["metric"]["instance"] for s in up) == sorted(two_replicas)
    assert {s["metric"]["region"] for s in up} == {"test"}
    # The raw counters come from both replicas; the recording rule sums them into one series per tier.
    def every_tier():  # the demo reaches each tier within seconds; wait for all three, not the first
        found = prom.query("tier:clary_http_requests:rate5m > 0")
        return found if {"lite", "standard", "professional"} <= {s["metric"]["tier"] for s in found} else None

    series = support.wait_until(every_tier, timeout=30, interval=0.1, what="recording rule for every tier")
    tiers = [s["metric"]["tier"] for s in series]
    assert len(tiers) == len(set(tiers)) and {"lite", "standard", "professional"} <= set(tiers)
    assert all(set(s["metric"]) == {"__name__", "tier"} for s in series)
    instances = {s["metric"]["instance"] for s in prom.query("clary_http_requests_total")}
    assert instances == set(two_replicas)


def test_federation_pulls_recording_rules(cluster_prometheus, scale):
    prom = scale.federation
    federated = support.wait_until(
        lambda: prom.query('tier:clary_http_requests:rate5m{cluster="clary-eu-1"}'),
        timeout=30, interval=0.1, what="federated recording rule")
    assert {s["metric"]["tier"] for s in federated} >= {"lite", "standard", "professional"}
    # Only aggregates and up travel, never the raw per-instance families.
    assert prom.query("clary_http_requests_total") == []
    assert len(prom.query('up{job="clary-exporter",cluster="clary-eu-1"}')) == 2
    names = {s["metric"]["__name__"] for s in prom.query('{cluster="clary-eu-1"}')}
    assert names and all(":" in n or n == "up" for n in names), names


def test_kubernetes_relabelling_keeps_only_labelled_metrics_ports(scale):
    """The Kubernetes example's relabel rules, applied by a real Prometheus to
    targets carrying the metadata Kubernetes SD attaches to pods."""
    prom = scale.kubernetes
    up = support.wait_until(lambda: prom.query('up{job="clary-exporter"} == 1'), timeout=30, interval=0.1,
                            what="pod scraped")
    active = prom.api("targets")["activeTargets"]
    assert len(active) == 1
    (series,) = up
    assert series["metric"] == {"__name__": "up", "job": "clary-exporter", "instance": "clary-exporter-0",
                                "namespace": "clary", "pod": "clary-exporter-0", "node": "node-1"}


@pytest.mark.parametrize("name", REMOTE_WRITE_EXAMPLES)
def test_remote_write_examples_ship_samples(name, scale):
    """Each example's remote_write section, pointed at a local receiver, really sends."""
    receiver, original_path = scale.remote_write[name]
    support.wait_until(lambda: receiver.received, timeout=30, interval=0.1, what=f"remote write from {name}")
    path, headers, size = receiver.received[0]
    assert path == original_path and size > 0
    assert headers["content-encoding"] == "snappy"
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["x-prometheus-remote-write-version"].startswith("0.1")
    # Not asserted: remote.get("headers") (Mimir's X-Scope-OrgID). Debian's Prometheus 2.42
    # sent no custom headers in this test; promtool accepts them and upstream honours them.
