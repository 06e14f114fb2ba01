"""Rule expressions are built through the catalog-checked builder: typos fail the build.

The strongest form of the check: each group module's own source is mutated
(a catalog metric name, a recorded series it reads, a label) and executed;
building the group must then raise with a message that names the mistake.
That proves the names in the real rule modules go through
``exporter.promql`` / ``RuleGroup.series``, not only that the builder could
check them.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from typing import Any

import pytest

from alerts.config import Config
from alerts.groups import RULE_FILES
from alerts.groups.common import RuleGroup, level_labels, sum_rate_over
from exporter.catalog import BY_NAME
from exporter.promql import m, over_time, quantile, rate, regex, sum_rate, up

GROUP_MODULES = ("slo", "http", "app", "license", "inference", "llm", "gpu", "exporter_self", "feedback", "meta")


def _source(module: str) -> tuple[str, str]:
    mod = importlib.import_module(f"alerts.groups.{module}")
    return mod.__file__, Path(mod.__file__).read_text()


def _build_mutant(module: str, start: int, end: int, replacement: str) -> dict[str, Any]:
    """Execute ``module`` with source[start:end] replaced, then build its group."""
    path, src = _source(module)
    mutated = src[:start] + replacement + src[end:]
    assert mutated != src
    ns: dict[str, Any] = {"__name__": f"alerts.groups._mutant_{module}", "__package__": "alerts.groups", "__file__": path}
    exec(compile(mutated, path, "exec"), ns)
    (builder,) = [v for k, v in ns.items() if k.endswith("_group") and getattr(v, "__module__", "") == ns["__name__"]]
    return builder(Config())


def _metric_literals() -> list[tuple[str, int, int, str]]:
    """(module, start, end, name) of every catalog metric name quoted in a group module."""
    out = []
    for module in GROUP_MODULES:
        _, src = _source(module)
        for match in re.finditer(r"""(?<=["'])(clary_[a-z0-9_]+)(?=["'])""", src):
            if match.group(1) in BY_NAME:
                out.append((module, match.start(), match.end(), match.group(1)))
    return out


def _series_references() -> list[tuple[str, int, int, str]]:
    """(module, start, end, name) of every recorded-series name read with ``g.series("...")``."""
    out = []
    for module in GROUP_MODULES:
        _, src = _source(module)
        for match in re.finditer(r"""g\.series\(f?(["'])([^"']+)\1""", src):
            out.append((module, match.start(2), match.end(2), match.group(2)))
    return out


METRICS = _metric_literals()
SERIES = _series_references()


def test_every_group_module_is_covered():
    assert {module for module, *_ in METRICS} == set(GROUP_MODULES) - {"meta"}
    assert {module for module, *_ in SERIES} == {"http", "license", "inference"}
    built = {build.__module__.rsplit(".", 1)[1] for builders in RULE_FILES.values() for build in builders}
    assert built == set(GROUP_MODULES)


@pytest.mark.parametrize(("module", "start", "end", "name"), METRICS, ids=[f"{m_}:{n}" for m_, _, _, n in METRICS])
def test_a_misspelt_metric_in_a_rule_fails_at_build_time(module, start, end, name):
    typo = name.replace("_", "__", 1)
    assert typo not in BY_NAME
    with pytest.raises(KeyError, match=f"metric '{typo}' is not in the catalog"):
        _build_mutant(module, start, end, typo)


@pytest.mark.parametrize(("module", "start", "end", "name"), SERIES, ids=[f"{m_}:{n}" for m_, _, _, n in SERIES])
def test_a_misspelt_recorded_series_fails_at_build_time(module, start, end, name):
    level, metric, operations = name.split(":")
    typo = f"{level}:{metric}s:{operations}"  # clary_http_requests -> clary_http_requestss
    # f-string names ({b.long}) are matched up to their first placeholder
    expected = re.escape(f"'{level}:{metric}s:") + r"[^']*' is not recorded earlier in rule group clary-"
    with pytest.raises(KeyError, match=expected):
        _build_mutant(module, start, end, typo)


@pytest.mark.parametrize(
    ("module", "old", "new", "message"),
    [
        # a matcher on a label the family does not have
        ("http", 'code=regex("5..")', 'status=regex("5..")', "clary_http_requests_total has no label 'status'"),
        # a value outside the label's allow-list
        ("inference", 'outcome="failure"', 'outcome="failed"', r"unknown value\(s\) \['failed'\]"),
        ("license", 'result=not_equal("valid")', 'result=not_equal("ok")', r"unknown value\(s\) \['ok'\]"),
        # a by label the family does not have
        ("feedback", "('tier',)", "('tiers',)", r"clary_feedback_urgent_total has no label\(s\) \['tiers'\] to group by"),
        ("exporter_self", '"job", "instance", "collector"', '"job", "instance", "colector"', "to group by"),
        ("app", "QUEUE.grouping(('queue',))", "QUEUE.grouping(('queues',))", r"clary_queue_length has no label\(s\) \['queues'\]"),
        # the latency SLO's bucket: le exists on _bucket series only
        ("slo", "DURATION.bucket(tier=tier, le=", "DURATION.count(tier=tier, le=", "has no label 'le'"),
        # a recorded series selected on a label its level dropped
        ("http", 'p95_rate5m", tier=tier)', 'p95_rate5m", model=tier)', r"keeps only the labels \['tier'\]; no \['model'\]"),
    ],
)
def test_a_label_the_catalog_does_not_have_fails_at_build_time(module, old, new, message):
    _, src = _source(module)
    assert src.count(old) == 1, old
    start = src.index(old)
    with pytest.raises(ValueError, match=message):
        _build_mutant(module, start, start + len(old), new)


def test_group_modules_type_no_metric_name_outside_the_builder():
    """A ``clary_`` name in a group module is a catalog lookup m("...") or part of a recorded name."""
    for module in GROUP_MODULES:
        path, src = _source(module)
        tree = ast.parse(src)
        looked_up = {
            id(node.args[0])
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "m"
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "clary_" in node.value:
                assert id(node) in looked_up or ":" in node.value, f"{path}:{node.lineno}: {node.value!r}"


# --- RuleGroup and the builder, directly -------------------------------------


def test_a_series_must_be_recorded_before_it_is_read_in_the_same_group():
    g = RuleGroup("clary-test", Config())
    with pytest.raises(KeyError, match="'tier:clary_x:rate5m' is not recorded earlier in rule group clary-test"):
        g.series("tier:clary_x:rate5m")
    name = g.record("tier:clary_x:rate5m", sum_rate_over(m("clary_http_requests_total"), "5m", ("tier",)))
    assert g.series(name) == "tier:clary_x:rate5m"
    assert g.series(name, tier="lite") == 'tier:clary_x:rate5m{tier="lite"}'
    with pytest.raises(KeyError, match="did you mean tier:clary_x:rate5m"):
        g.series("tier:clary_x:rate5n")
    # another group's recording is not visible: groups run concurrently
    other = RuleGroup("clary-other", Config())
    with pytest.raises(KeyError, match="rule group clary-other"):
        other.series(name)
    with pytest.raises(ValueError, match="recorded twice"):
        g.record(name, "vector(1)")
    with pytest.raises(ValueError, match=r"cannot sum by \['model'\]"):
        g.sum_by(name, ("model",))


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("tier:clary_http_requests:rate5m", ("tier",)),
        ("tier_le:clary_http_request_duration_seconds_bucket:rate5m", ("tier", "le")),
        ("license_tier_limit:clary_license_usage_per_limit:ratio", ("license", "tier", "limit")),
        ("doc_type_tier:clary_x:rate5m", ("doc_type", "tier")),
    ],
)
def test_recorded_names_follow_level_metric_operations(name, labels):
    assert level_labels(name) == labels


@pytest.mark.parametrize("name", ["clary_http_requests_total", "tier:clary_x", "teir:clary_x:rate5m", ":clary_x:rate5m"])
def test_malformed_recorded_names_are_refused(name):
    with pytest.raises(ValueError, match="recorded series"):
        RuleGroup("clary-test", Config()).record(name, "vector(1)")


def test_the_shared_builder_checks_windows_grouping_and_target_labels():
    http = m("clary_http_requests_total")
    assert rate(http.sel(), "5m") == "rate(clary_http_requests_total[5m])"
    assert rate(http.sel()) == "rate(clary_http_requests_total[$__rate_interval])"
    assert over_time("max", "x", "1d") == "max_over_time(x[1d])"
    with pytest.raises(ValueError, match="no median_over_time"):
        over_time("median", "x", "1d")
    assert up(job="clary-exporter") == 'up{job="clary-exporter"}'
    assert sum_rate(http, ("tier", "instance"), code=regex("5..")) == (
        'sum by (tier, instance) (rate(clary_http_requests_total{code=~"5.."}[$__rate_interval]))'
    )
    with pytest.raises(ValueError, match="to group by"):
        sum_rate(http, ("le",))  # le is a label of _bucket series only
    duration = m("clary_http_request_duration_seconds")
    assert "sum by (le, tier)" in quantile(0.95, duration, ("tier",))
    with pytest.raises(ValueError, match="to group by"):
        quantile(0.95, duration, ("code",))  # the histogram has no code label
