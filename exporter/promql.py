"""PromQL building blocks whose metric names come from the catalog.

The one query builder of the project: ``dashboards/`` and the alert rules in
``alerts/groups/`` never type a metric name into a query string. Every
family is looked up with :func:`m`, which goes through
``exporter.catalog.spec`` so that a typo or a renamed metric fails when the
dashboards or rules are built, not when someone opens Grafana or an alert
stays silent. Label matchers are checked too: the label must belong to the
family, and an equality (or plain alternation) matcher on a label with an
allow-list must use values from it. The ``by`` labels of the aggregating
helpers (:func:`sum_rate`, :func:`quantile`, ...) must belong to the family.

Conventions baked in here:

- every ``rate()`` / ``increase()`` runs over ``$__rate_interval`` unless a
  window is passed (rules have no Grafana variables: ``rate(x, "5m")``);
  :func:`increase_range` is a total over the dashboard's time range
  (``$__range``) meant for instant queries;
- aggregation is always explicit (``sum by (...)``), because several exporter
  replicas may be scraped;
- quantiles are ``histogram_quantile(q, sum by (le, ...) (rate(..._bucket)))``.
"""

from __future__ import annotations

import re as _re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Mapping

from exporter.catalog import Kind, MetricSpec, spec

RATE_INTERVAL = "$__rate_interval"
RANGE = "$__range"

# Labels Prometheus adds at scrape time; allowed in matchers next to the
# family's own labels.
TARGET_LABELS = frozenset({"instance", "job"})

_PLAIN_ALTERNATION = _re.compile(r"^[A-Za-z0-9_.\-]+(\|[A-Za-z0-9_.\-]+)*$")


@dataclass(frozen=True)
class Match:
    """A label matcher other than plain equality."""

    op: str
    value: str


def regex(value: str) -> Match:
    return Match("=~", value)


def not_equal(value: str) -> Match:
    return Match("!=", value)


def not_regex(value: str) -> Match:
    return Match("!~", value)


def one_of(values: Iterable[str]) -> Match:
    """``label=~"a|b|c"`` from a list of literal values (validated by ``sel``)."""
    values = list(values)
    if not values:
        raise ValueError("one_of() needs at least one value")
    return Match("=~", "|".join(values))


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def selector(name: str, matchers: Mapping[str, str | Match]) -> str:
    """``name{a="x",b=~"y"}`` with nothing checked: callers check name and labels first."""
    parts = []
    for label, matcher in matchers.items():
        if isinstance(matcher, Match):
            parts.append(f"{label}{matcher.op}{_quote(matcher.value)}")
        else:
            parts.append(f"{label}={_quote(matcher)}")
    return name + ("{" + ",".join(parts) + "}" if parts else "")


@dataclass(frozen=True)
class Family:
    """A catalog metric family, ready to be turned into selectors."""

    spec: MetricSpec

    @property
    def name(self) -> str:
        return self.spec.name

    def __str__(self) -> str:  # pragma: no cover - convenience only
        return self.name

    def _sample(self, suffix: str) -> str:
        if suffix and self.spec.kind is not Kind.HISTOGRAM:
            raise ValueError(f"{self.name} is a {self.spec.kind.value}, it has no _{suffix} series")
        if not suffix and self.spec.kind is Kind.HISTOGRAM:
            raise ValueError(f"{self.name} is a histogram: select _bucket, _sum or _count")
        return f"{self.name}_{suffix}" if suffix else self.name

    def _allowed(self, suffix: str) -> frozenset[str]:
        allowed = set(self.spec.label_names) | TARGET_LABELS
        if suffix == "bucket":
            allowed.add("le")
        return frozenset(allowed)

    def grouping(self, by: Iterable[str], _suffix: str = "") -> tuple[str, ...]:
        """``by`` as a tuple, once every label is known to be one this family's series carry."""
        by = tuple(by)
        allowed = self._allowed(_suffix)
        unknown = [label for label in by if label not in allowed]
        if unknown:
            raise ValueError(f"{self.name} has no label(s) {unknown} to group by (labels: {sorted(allowed)})")
        return by

    def _check(self, label: str, matcher: str | Match, suffix: str) -> None:
        allowed = self._allowed(suffix)
        if label not in allowed:
            raise ValueError(f"{self.name} has no label {label!r} (labels: {sorted(allowed)})")
        label_spec = next((l for l in self.spec.labels if l.name == label), None)
        if label_spec is None or label_spec.values is None:
            return
        known = set(label_spec.values) | ({label_spec.fallback} if label_spec.fallback else set())
        if isinstance(matcher, str):
            values = [matcher]
        elif _PLAIN_ALTERNATION.match(matcher.value):
            values = matcher.value.split("|")
        else:
            return  # a real regex: cannot be checked value by value
        unknown = [v for v in values if v not in known]
        if unknown:
            raise ValueError(f"{self.name}{{{label}}}: unknown value(s) {unknown}; allowed {sorted(known)}")

    def sel(self, _suffix: str = "", **matchers: str | Match) -> str:
        """A selector such as ``clary_http_requests_total{tier="lite",code=~"5.."}``."""
        name = self._sample(_suffix)
        for label, matcher in matchers.items():
            self._check(label, matcher, _suffix)
        return selector(name, matchers)

    def bucket(self, **matchers: str | Match) -> str:
        return self.sel("bucket", **matchers)

    def sum(self, **matchers: str | Match) -> str:
        return self.sel("sum", **matchers)

    def count(self, **matchers: str | Match) -> str:
        return self.sel("count", **matchers)


@lru_cache(maxsize=None)
def m(name: str) -> Family:
    """The catalog family called ``name``; a KeyError names an unknown metric."""
    return Family(spec(name))


def up(**matchers: str | Match) -> str:
    """Prometheus' own ``up`` series of a scrape target; it carries only target labels."""
    unknown = sorted(set(matchers) - TARGET_LABELS)
    if unknown:
        raise ValueError(f"up has no label(s) {unknown} (labels: {sorted(TARGET_LABELS)})")
    return selector("up", matchers)


def label_values(name: str, label: str) -> tuple[str, ...]:
    """The catalog's allow-list for ``label`` of family ``name``."""
    for label_spec in spec(name).labels:
        if label_spec.name == label:
            if label_spec.values is None:
                raise ValueError(f"{name}{{{label}}} has no fixed value set")
            return label_spec.values
    raise ValueError(f"{name} has no label {label!r}")


# --- expression helpers ---------------------------------------------------

def _atomic(expr: str) -> bool:
    """True when ``expr`` has no binary operator outside brackets or quotes."""
    depth = 0
    quote = False
    prev = ""
    for ch in expr:
        if quote:
            if ch == '"' and prev != "\\":
                quote = False
        elif ch == '"':
            quote = True
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and ch in "+-*/%^<>=!":
            return False
        prev = ch
    return True


def paren(expr: str) -> str:
    return expr if _atomic(expr) else f"({expr})"


def rate(series: str, window: str = RATE_INTERVAL) -> str:
    return f"rate({series}[{window}])"


def increase(series: str, window: str = RATE_INTERVAL) -> str:
    return f"increase({series}[{window}])"


_OVER_TIME = frozenset({"avg", "min", "max", "sum", "count", "last", "present"})


def over_time(op: str, series: str, window: str = RATE_INTERVAL) -> str:
    """``max_over_time(x[1d])`` and the other ``<op>_over_time`` functions."""
    if op not in _OVER_TIME:
        raise ValueError(f"no {op}_over_time function; known: {sorted(_OVER_TIME)}")
    return f"{op}_over_time({series}[{window}])"


def increase_range(series: str) -> str:
    """Total over the dashboard time range: use with instant queries only."""
    return f"increase({series}[{RANGE}])"


def agg(expr: str, by: Iterable[str] = (), op: str = "sum") -> str:
    by = tuple(by)
    if by:
        return f"{op} by ({', '.join(by)}) ({expr})"
    return f"{op}({expr})"


def div(num: str, den: str) -> str:
    return f"{paren(num)} / {paren(den)}"


def sum_rate(family: Family, by: Iterable[str] = (), **matchers: str | Match) -> str:
    return agg(rate(family.sel(**matchers)), family.grouping(by))


def sum_total(family: Family, by: Iterable[str] = (), **matchers: str | Match) -> str:
    """``sum by (...) (increase(x[$__range]))``: events in the selected range."""
    return agg(increase_range(family.sel(**matchers)), family.grouping(by))


def sum_gauge(family: Family, by: Iterable[str] = (), **matchers: str | Match) -> str:
    return agg(family.sel(**matchers), family.grouping(by))


def rate_ratio(
    family: Family,
    part: dict[str, str | Match],
    by: Iterable[str] = (),
    **matchers: str | Match,
) -> str:
    """Share of the rate that also matches ``part`` (e.g. the 5xx ratio)."""
    by = tuple(by)
    return div(sum_rate(family, by, **matchers, **part), sum_rate(family, by, **matchers))


def total_ratio(
    family: Family,
    part: dict[str, str | Match],
    by: Iterable[str] = (),
    **matchers: str | Match,
) -> str:
    """Like :func:`rate_ratio` over the whole dashboard range (instant)."""
    by = tuple(by)
    return div(sum_total(family, by, **matchers, **part), sum_total(family, by, **matchers))


def quantile(q: float, family: Family, by: Iterable[str] = (), **matchers: str | Match) -> str:
    """``histogram_quantile(q, sum by (le, ...) (rate(x_bucket[$__rate_interval])))``."""
    labels = family.grouping(("le", *by), "bucket")
    return f"histogram_quantile({q}, {agg(rate(family.bucket(**matchers)), labels)})"


def hist_mean(family: Family, by: Iterable[str] = (), **matchers: str | Match) -> str:
    """Mean observation over ``$__rate_interval``: rate(_sum) / rate(_count)."""
    by = family.grouping(by, "sum")
    return div(agg(rate(family.sum(**matchers)), by), agg(rate(family.count(**matchers)), by))


def hist_mean_range(family: Family, by: Iterable[str] = (), **matchers: str | Match) -> str:
    """Mean observation over the dashboard range (instant)."""
    by = family.grouping(by, "sum")
    return div(
        agg(increase_range(family.sum(**matchers)), by),
        agg(increase_range(family.count(**matchers)), by),
    )


def hist_buckets(family: Family, *, over_range: bool = False, **matchers: str | Match) -> str:
    """Per-bucket counts for heatmaps and distribution bars (target format ``heatmap``)."""
    buckets = family.bucket(**matchers)
    inner = increase_range(buckets) if over_range else increase(buckets)
    return agg(inner, ("le",))


def days_to_expiry(by: Iterable[str] = ("license",), **matchers: str | Match) -> str:
    """Days until each license expires.

    The expiry timestamp is state reported identically by every replica that
    saw the license, so replicas are collapsed with ``max`` (a sum would
    multiply the timestamp).
    """
    family = m("clary_license_expiry_timestamp_seconds")
    expiry = agg(family.sel(**matchers), family.grouping(by), op="max")
    return f"({expiry} - time()) / 86400"


def compliance(by: Iterable[str] = ("license", "limit"), **matchers: str | Match) -> str:
    """usage / limit per license and limit (replicated state: ``max``)."""
    usage_family, limit_family = m("clary_license_usage"), m("clary_license_limit")
    usage = agg(usage_family.sel(**matchers), usage_family.grouping(by), op="max")
    limit = agg(limit_family.sel(**matchers), limit_family.grouping(by), op="max")
    return div(usage, limit)
