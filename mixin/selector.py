"""The site's selector text, parsed; the :class:`~exporter.promql.Scope` of the rules and of the dashboards.

A selector is written as in PromQL, without the braces:
``job="clary-exporter"`` or ``job=~"clary-exporter|clary-api",namespace="ai"``.
The rules put it as it is on every selector they read; the dashboards turn
its ``job`` matcher into the ``$job`` variable (whose choices the selector
limits), add ``$cluster`` and ``$instance``, and keep any other matcher as
written.
"""

from __future__ import annotations

import re

from exporter.promql import Match, Matchers, Scope, regex

_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_MATCHER = re.compile(rf'\s*({_LABEL})\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')

# The dashboards' template variables, in the order Grafana shows them.
DASHBOARD_VARIABLES = ("cluster", "job", "instance")


def parse(text: str, what: str = "selector") -> Matchers:
    """``job="x",ns=~"a|b"`` -> ``(("job", "x"), ("ns", Match("=~", "a|b")))``; ValueError naming the problem."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what} must be a non-empty string such as job=\"clary-exporter\", got {text!r}")
    body = text.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    out: list[tuple[str, str | Match]] = []
    pos = 0
    while pos < len(body):
        match = _MATCHER.match(body, pos)
        if not match or match.end() == pos:
            raise ValueError(f"{what} {text!r}: cannot read a matcher at {body[pos:pos + 20]!r} "
                             "(write label=\"value\", label=~\"regex\", ... separated by commas)")
        label, op, value = match.groups()
        value = value.encode().decode("unicode_escape")
        if label == "__name__":
            raise ValueError(f"{what} {text!r}: selects labels, not metric names")
        if any(label == seen for seen, _ in out):
            raise ValueError(f"{what} {text!r}: label {label} appears twice")
        out.append((label, value if op == "=" else Match(op, value)))
        pos = match.end()
    if "job" not in {label for label, _ in out}:
        raise ValueError(f"{what} {text!r} needs a job matcher (job=\"clary-exporter\")")
    return tuple(out)


def render(matchers: Matchers) -> str:
    """The matchers back as text: ``job="x",ns=~"a"`` (the rules' selector, quoted)."""
    parts = []
    for label, matcher in matchers:
        op, value = ("=", matcher) if isinstance(matcher, str) else (matcher.op, matcher.value)
        parts.append(f'{label}{op}"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return ",".join(parts)


def rule_scope(matchers: Matchers, cluster_label: str) -> Scope:
    """Rules: the selector as written on every raw selector; the cluster label kept by every aggregation."""
    return Scope(matchers=matchers, recorded=(), keep=(cluster_label,))


def dashboard_matchers(matchers: Matchers, cluster_label: str) -> Matchers:
    """``cluster=~"$cluster",job=~"$job",instance=~"$instance"`` and the selector's other matchers."""
    variables: dict[str, str | Match] = {
        cluster_label: regex("$cluster"),
        "job": regex("$job"),
        "instance": regex("$instance"),
    }
    rest = tuple((label, m) for label, m in matchers if label not in variables)
    return (*variables.items(), *rest)


def dashboard_scope(matchers: Matchers, cluster_label: str) -> Scope:
    """Dashboards: the variables on raw selectors; ``$cluster`` on recorded ones; nothing kept."""
    return Scope(
        matchers=dashboard_matchers(matchers, cluster_label),
        recorded=((cluster_label, regex("$cluster")),),
        keep=(),
    )
