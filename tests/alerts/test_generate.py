"""The alert generator (python -m alerts.generate): the committed files are its output; its config works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace

import pytest
import yaml

import exporter
from alerts import checks, cli, render
from alerts.config import (
    BURN_RATE_WINDOWS,
    RECEIVERS,
    SLO_PERIOD_DAYS,
    SLO_SERIES,
    SLO_WINDOWS,
    Config,
    seconds,
)
from alerts.groups import RULE_FILES
from tests.support import ROOT


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120, cwd=ROOT, **kw)


def _generate(*args, env=None) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "alerts.generate", *args], env=env)


def test_committed_files_are_what_the_generator_writes():
    problems = render.check(checks.ALERTS_DIR, render.render(Config()))
    assert not problems, (
        "alerts/rules/*.yml or alerts/alertmanager.yml differ from what the generator (alerts/groups, alerts/config.py) builds; "
        f"regenerate with `{cli.REGENERATE_HINT}` and commit the result:\n" + "\n".join(problems)
    )


def test_check_mode_passes_on_the_committed_files():
    proc = _generate("--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "up to date" in proc.stdout


def test_output_is_deterministic_across_processes(tmp_path):
    outputs = []
    for seed in ("0", "4242"):
        out = tmp_path / seed
        proc = _generate("--output-dir", out, env={**os.environ, "PYTHONHASHSEED": seed})
        assert proc.returncode == 0, proc.stderr
        outputs.append({p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.yml"))})
    assert outputs[0] == outputs[1]
    assert set(outputs[0]) == set(render.render())
    committed = {rel: (checks.ALERTS_DIR / rel).read_bytes() for rel in outputs[0]}
    assert outputs[0] == committed


def test_check_mode_reports_drift_stale_files_and_how_to_regenerate(tmp_path):
    assert cli.main(["--output-dir", str(tmp_path)]) == 0
    assert _generate("--check", "--output-dir", tmp_path).returncode == 0

    edited = tmp_path / "rules" / "clary-http.yml"
    original = edited.read_text()
    assert "ratio_rate30m > 0.1\n" in original
    edited.write_text(original.replace("ratio_rate30m > 0.1\n", "ratio_rate30m > 0.2\n"))
    proc = _generate("--check", "--output-dir", tmp_path)
    assert proc.returncode == 1
    assert "rules/clary-http.yml" in proc.stderr
    assert "python -m alerts.generate" in proc.stderr

    assert cli.main(["--output-dir", str(tmp_path)]) == 0
    stale = tmp_path / "rules" / "clary-old.yml"
    stale.write_text("groups: []\n")
    proc = _generate("--check", "--output-dir", tmp_path)
    assert proc.returncode == 1 and "rules/clary-old.yml: not generated any more" in proc.stderr
    assert cli.main(["--output-dir", str(tmp_path)]) == 0
    assert not stale.exists()


def test_version_and_help():
    proc = _generate("--version")
    assert proc.returncode == 0 and proc.stdout == f"clary-alerts {exporter.__version__}\n", proc.stdout + proc.stderr
    proc = _generate("--help")
    assert proc.returncode == 0, proc.stderr
    for text in ("--config", "--slo-target", "--output-dir", "--check", "--version", "python -m alerts.generate --check"):
        assert text in proc.stdout, text


def test_the_generator_stays_split_into_small_modules():
    sizes = {p.relative_to(checks.ALERTS_DIR).as_posix(): len(p.read_text().splitlines()) for p in checks.ALERTS_DIR.rglob("*.py")}
    assert "groups/http.py" in sizes and sizes["generate.py"] < 50
    assert {rel: n for rel, n in sizes.items() if n > 450} == {}


def test_burn_rate_windows_come_from_the_table():
    assert SLO_WINDOWS == ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
    assert [(b.long, b.short, b.factor) for b in BURN_RATE_WINDOWS] == [
        ("1h", "5m", 14.4), ("6h", "30m", 6), ("1d", "2h", 3), ("3d", "6h", 1)
    ]
    # a budget-consistent table: each pair spends the share of a 30-day budget it claims
    for b, share in zip(BURN_RATE_WINDOWS, (0.02, 0.05, 0.10, 0.10)):
        spent = b.factor * seconds(b.long) / (SLO_PERIOD_DAYS * 86400)
        assert spent == pytest.approx(share)


def _objective(cfg: Config, slo: str) -> str:
    rules = yaml.safe_load(render.render(cfg)["rules/clary-slo.yml"])["groups"][0]["rules"]
    (expr,) = [r["expr"] for r in rules if r.get("record") == SLO_SERIES[slo].objective]
    return expr


def test_slo_targets_move_the_objective_and_thereby_every_burn_rate_threshold(tmp_path):
    """The burn-rate alerts divide by (1 - objective): a target is written once, in the objective."""
    default = _objective(Config(), "availability")
    assert 'vector(0.995), "tier", "standard"' in default
    cfg = Config.from_mapping({"availability_slo": {"standard": 0.999}, "document_slo": {"lite": 0.95}})
    assert dict(cfg.availability_slo) == {"lite": 0.99, "standard": 0.999, "professional": 0.999}
    assert 'vector(0.999), "tier", "standard"' in _objective(cfg, "availability")
    assert 'vector(0.99), "tier", "lite"' in _objective(cfg, "availability")
    assert 'vector(0.95), "tier", "lite"' in _objective(cfg, "documents")
    assert "standard 99.9%" in render.render(cfg)["rules/clary-slo.yml"]  # the alert says which targets

    # --slo-target sets every tier's availability target; a config file does the same
    config = tmp_path / "site.yml"
    config.write_text("availability_slo: {lite: 0.999, standard: 0.999, professional: 0.999}\n")
    assert _generate("--config", config, "--output-dir", tmp_path / "a").returncode == 0
    assert _generate("--slo-target", "0.999", "--output-dir", tmp_path / "b").returncode == 0
    a = (tmp_path / "a" / "rules" / "clary-slo.yml").read_text()
    assert a == (tmp_path / "b" / "rules" / "clary-slo.yml").read_text()
    assert a.count('label_replace(vector(0.999), "tier"') == 3
    promtool = checks.binary("promtool")
    proc = _run([promtool, "check", "rules", *sorted((tmp_path / "a" / "rules").glob("*.yml"))])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_thresholds_and_names_come_from_the_config():
    cfg = Config.from_mapping(
        {
            "latency_p95_seconds": {"professional": 0.75},
            "gpu_temperature_warning_celsius": 80,
            "selector": 'job="clary",namespace="ai"',
            "runbook_base_url": "https://wiki.example.com/clary/runbooks.md",
        }
    )
    # a partial mapping updates one tier and keeps the others
    assert dict(cfg.latency_p95_seconds) == {"lite": 2.5, "standard": 1.5, "professional": 0.75}
    out = render.render(cfg)
    assert 'p95_rate5m{tier="professional"} > 0.75' in out["rules/clary-http.yml"]
    # 0.75 s is a bucket: the latency SLO reads it alone
    assert 'tier="professional",le="0.75"}' in out["rules/clary-slo.yml"]
    assert 'clary_gpu_temperature_celsius{job="clary",namespace="ai"} > 80' in out["rules/clary-infrastructure.yml"]
    assert 'absent(up{job="clary",namespace="ai"})' in out["rules/clary-infrastructure.yml"]
    assert "https://wiki.example.com/clary/runbooks.md#claryexporterdown" in out["rules/clary-infrastructure.yml"]
    # every raw selector of every rule carries the selector
    for text in out.values():
        for line in text.splitlines():
            assert 'job="clary-exporter"' not in line, line


def test_every_raw_selector_of_the_committed_rules_carries_the_selector():
    """Rules read the config's selector (job="clary-exporter"); recorded series are already selected."""
    missing = []
    for _, rule in checks.iter_rules():
        for sel in checks.read_expr(rule["expr"]).selectors:
            if ":" in sel.name or sel.name == "":
                continue
            jobs = [m for m in sel.matchers if m.label == "job"]
            if sel.name == "up" and jobs and jobs[0].value == "clary-services":
                continue
            if [(m.op, m.value) for m in jobs] != [("=", "clary-exporter")]:
                missing.append((rule.get("alert") or rule["record"], sel))
    assert not missing, missing


def test_rules_keep_the_cluster_label_in_every_aggregation_and_match():
    """Evaluated over several clusters (a global ruler), no rule adds one cluster to another."""
    for _, rule in checks.iter_rules():
        for clause in re.findall(r"\b(by|on) \(([^)]*)\)", rule["expr"]):
            if clause[0] == "on" and "group_left" in rule["expr"] and clause[1] == "tier":
                continue  # the per-tier SLO target has no cluster: matched on the tier alone
            assert clause[1].split(", ")[0] == "cluster", (rule.get("alert") or rule["record"], clause)
    other = render.render(Config.from_mapping({"cluster_label": "region"}))["rules/clary-slo.yml"]
    assert "sum by (region, tier)" in other and "cluster" not in other.split("\n", 3)[3]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"availability_slo": {"lite": 1.0}}, r"availability_slo\[lite\] must be between 0 and 1"),
        ({"latency_slo": {"standard": 0.9}}, "14.4x"),
        ({"document_slo": {"gold": 0.9}}, "document_slo needs exactly the tiers"),
        ({"slo_target": 0.99}, "unknown config keys"),
        ({"selector": "clary-exporter"}, "cannot read a matcher"),
        ({"selector": 'instance="a"'}, "needs a job matcher"),
        ({"cluster_label": "tier"}, "cluster_label"),
        ({"latency_p95_seconds": {"lite": 30}}, r"latency_p95_seconds\[lite\] must lie within"),
        ({"team_receivers": {"licensing": ["clary-nowhere"]}}, r"team_receivers\[licensing\]"),
        ({"team_receivers": {"finance": ["clary-ticket"]}}, "unknown team"),
        ({"latency_p95_seconds": {"gold": 1}}, "latency_p95_seconds"),
        ({"license_expiry_warning_days": 0}, "license_expiry_warning_days"),
        ({"gpu_temperature_critical_celsius": 80}, "gpu_temperature"),
        ({"quantiles": [0.5, 0.99]}, "include 0.95"),
        ({"burn_rate_min_events": 0}, "burn_rate_min_events"),
        ({"queue_backlog_max": 0}, "queue_backlog_max"),
        ({"webhook_urls": {"clary-pager": "http://x"}}, "unknown receivers"),
        ({"receiver_overrides": {"clary-chat": {}}}, "receiver_overrides"),
        ({"runbook_base_url": "https://x/runbooks.md#top"}, "runbook_base_url"),
    ],
)
def test_bad_config_is_refused_with_a_reason(overrides, message):
    with pytest.raises(ValueError, match=message):
        Config.from_mapping(overrides)


def test_cli_reports_a_bad_config_file(tmp_path):
    config = tmp_path / "bad.yml"
    config.write_text("availability_slo: {lite: 2}\n")
    proc = _generate("--config", config, "--output-dir", tmp_path / "out")
    assert proc.returncode == 2
    assert "availability_slo[lite]" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_default_receivers_are_placeholder_webhooks_without_secrets():
    am = yaml.safe_load((checks.ALERTS_DIR / "alertmanager.yml").read_text())
    assert [r["name"] for r in am["receivers"]] == list(RECEIVERS)
    for receiver in am["receivers"]:
        assert set(receiver) == {"name", "webhook_configs"}
        (hook,) = receiver["webhook_configs"]
        assert hook["url"] == f"http://alert-webhook.invalid/clary/{receiver['name']}"
        assert hook["send_resolved"] is (receiver["name"] != "clary-deadmansswitch")


SITE_CONFIG = """
webhook_urls:
  clary-ticket: https://tickets.example.com/hooks/alertmanager
receiver_overrides:
  clary-oncall-pager:
    pagerduty_configs:
      - routing_key_file: /etc/alertmanager/secrets/pagerduty-routing-key
  clary-chat:
    slack_configs:
      - api_url_file: /etc/alertmanager/secrets/slack-webhook-url
        channel: '#clary-alerts'
        send_resolved: true
  clary-support:
    email_configs:
      - to: support@example.com
        from: alertmanager@example.com
        smarthost: smtp.example.com:587
        auth_username: alertmanager
        auth_password_file: /etc/alertmanager/secrets/smtp-password
  clary-development:
    opsgenie_configs:
      - api_key_file: /etc/alertmanager/secrets/opsgenie-api-key
        responders:
          - name: clary-dev
            type: team
  clary-deadmansswitch:
    webhook_configs:
      - url: https://api.opsgenie.com/v2/heartbeats/clary-watchdog/ping
        send_resolved: false
        http_config:
          authorization:
            type: GenieKey
            credentials_file: /etc/alertmanager/secrets/opsgenie-api-key
"""


def test_a_site_config_points_receivers_at_pagerduty_slack_email_opsgenie(tmp_path):
    config = tmp_path / "site.yml"
    config.write_text(SITE_CONFIG)
    proc = _generate("--config", config, "--output-dir", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "out" / "alertmanager.yml"
    amtool = checks.binary("amtool")
    check = _run([amtool, "check-config", path])
    assert check.returncode == 0, check.stdout + check.stderr

    site = yaml.safe_load(path.read_text())
    default = yaml.safe_load((checks.ALERTS_DIR / "alertmanager.yml").read_text())
    assert site["route"] == default["route"] and site["inhibit_rules"] == default["inhibit_rules"]
    receivers = {r["name"]: r for r in site["receivers"]}
    assert receivers["clary-ticket"]["webhook_configs"][0]["url"] == "https://tickets.example.com/hooks/alertmanager"
    assert receivers["clary-oncall-pager"] == {
        "name": "clary-oncall-pager",
        "pagerduty_configs": [{"routing_key_file": "/etc/alertmanager/secrets/pagerduty-routing-key"}],
    }
    assert set(receivers["clary-chat"]) == {"name", "slack_configs"}
    assert set(receivers["clary-support"]) == {"name", "email_configs"}
    assert set(receivers["clary-development"]) == {"name", "opsgenie_configs"}
    # secrets stay in files: no key or password value appears in the config
    assert "secret" not in path.read_text().replace("/etc/alertmanager/secrets/", "")

    # the rules do not depend on receivers
    for rel in RULE_FILES:
        assert (tmp_path / "out" / "rules" / rel).read_text() == (checks.ALERTS_DIR / "rules" / rel).read_text()


def test_config_objects_are_immutable():
    cfg = Config()
    with pytest.raises(TypeError):
        cfg.latency_p95_seconds["lite"] = 9  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.availability_slo["lite"] = 0.5  # type: ignore[index]
    assert replace(cfg, queue_backlog_max=5).queue_backlog_max == 5
