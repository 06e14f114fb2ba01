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
- quantiles are ``histogram_quantile(q, sum by (le, ...) (rate(..._bucket)))``;
- a :class:`Scope` (set with :func:`scoped` by whoever generates output:
  the rules with the site's selector ``job="clary-exporter"``, the dashboards
  with their ``$cluster``/``$job``/``$instance`` variables) adds its matchers
  to every selector :meth:`Family.sel` makes and its ``keep`` labels (the
  cluster label, for rules) to every aggregation and :func:`on` clause, so no
  query can miss the selector. Outside a scope nothing is added.
"""

from __future__ import annotations

import re as _re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Mapping

from exporter.catalog import Kind, MetricSpec, spec

RATE_INTERVAL = "$__rate_interval"
RANGE = "$__range"
STEP_SECONDS = "$__interval_ms / 1000"  # a range query's step (Grafana's $__interval), in seconds

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


Matchers = tuple[tuple[str, "str | Match"], ...]


@dataclass(frozen=True)
class Scope:
    """What every query built inside :func:`scoped` gets.

    ``matchers`` go on every catalog selector (``Family.sel``), ``recorded``
    on every recorded series read with :func:`recorded` (those have lost
    ``job`` and ``instance`` to aggregation, so a dashboard can filter them
    on the cluster only), and ``keep`` labels are added to every ``by`` of
    :func:`agg` and every :func:`on`, so rules evaluated over several
    clusters never add one cluster to another.
    """

    matchers: Matchers = ()
    recorded: Matchers = ()
    keep: tuple[str, ...] = ()


_NO_SCOPE = Scope()
_SCOPE: ContextVar[Scope] = ContextVar("clary_promql_scope")


@contextmanager
def scoped(scope: Scope) -> Iterator[Scope]:
    """Build queries with ``scope`` in force (nesting replaces, never merges)."""
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def current_scope() -> Scope:
    return _SCOPE.get(_NO_SCOPE)


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
        """A selector such as ``clary_http_requests_total{tier="lite",code=~"5.."}``, scope matchers first."""
        name = self._sample(_suffix)
        for label, matcher in matchers.items():
            self._check(label, matcher, _suffix)
        scope = {label: matcher for label, matcher in current_scope().matchers if label not in matchers}
        return selector(name, {**scope, **matchers})

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


def recorded(name: str, **matchers: str | Match) -> str:
    """A recorded series (``level:metric:operations``) with the scope's ``recorded`` matchers.

    Unchecked against the catalog: the rule generator checks recorded names
    (``alerts.groups.common.RuleGroup.series``) and ``mixin.slo`` names the
    ones the dashboards read.
    """
    if name.count(":") != 2:
        raise ValueError(f"{name!r} is not a recorded series name (level:metric:operations)")
    scope = {label: matcher for label, matcher in current_scope().recorded if label not in matchers}
    return selector(name, {**scope, **matchers})


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


def _kept(by: Iterable[str]) -> tuple[str, ...]:
    by = tuple(by)
    return (*(label for label in current_scope().keep if label not in by), *by)


def on(*labels: str) -> str:
    """``on (tier)`` for vector matching, with the scope's ``keep`` labels first."""
    return f"on ({', '.join(_kept(labels))})"


def agg(expr: str, by: Iterable[str] = (), op: str = "sum") -> str:
    by = _kept(by)
    if by:
        return f"{op} by ({', '.join(by)}) ({expr})"
    return f"{op}({expr})"


def div(num: str, den: str) -> str:
    """``num / (den > 0)``: absent where the denominator is 0, never NaN or ±Inf."""
    return f"{paren(num)} / ({den} > 0)"


def or_zero(part: str, whole: str) -> str:
    """``part``, or 0 where only ``whole`` has a series: a ratio's numerator that reads 0, not "no data"."""
    return f"({part} or 0 * {paren(whole)})"


def sum_rate(family: Family, by: Iterable[str] = (), **matchers: str | Match) -> str:
    return agg(rate(family.sel(**matchers)), family.grouping(by))


def sum_total(family: Family, by: Iterable[str] = (), **matchers: str | Match) -> str:
    """``sum by (...) (increase(x[$__range]))``: events in the selected range."""
    return agg(increase_range(family.sel(**matchers)), family.grouping(by))


def sum_gauge(family: Family, by: Iterable[str] = (), **matchers: str | Match) -> str:
    return agg(family.sel(**matchers), family.grouping(by))


def max_gauge(family: Family, by: Iterable[str] = (), **matchers: str | Match) -> str:
    """``max by (...) (x)``: shared state every replica reports alike (a queue's length), or
    distinct counts (alike on every replica with a shared store, per replica otherwise), which
    must not be added across replicas."""
    return agg(family.sel(**matchers), family.grouping(by), op="max")


def rate_ratio(
    family: Family,
    part: dict[str, str | Match],
    by: Iterable[str] = (),
    **matchers: str | Match,
) -> str:
    """Share of the rate that also matches ``part`` (e.g. the 5xx ratio).

    0 (not "no data") while there is traffic and none of it matches, absent
    (not NaN) while there is none, as the recording rules' ratios are.
    """
    by = tuple(by)
    whole = sum_rate(family, by, **matchers)
    return div(or_zero(sum_rate(family, by, **matchers, **part), whole), whole)


def total_ratio(
    family: Family,
    part: dict[str, str | Match],
    by: Iterable[str] = (),
    **matchers: str | Match,
) -> str:
    """Like :func:`rate_ratio` over the whole dashboard range (instant)."""
    by = tuple(by)
    whole = sum_total(family, by, **matchers)
    return div(or_zero(sum_total(family, by, **matchers, **part), whole), whole)


def quantile(q: float, family: Family, by: Iterable[str] = (), **matchers: str | Match) -> str:
    """``histogram_quantile(q, sum by (le, ...) (rate(x_bucket[$__rate_interval]))) >= 0``.

    With no observation in the window every bucket's rate is 0 and the
    quantile is NaN; ``>= 0`` (false for NaN) leaves such points out.
    """
    labels = family.grouping(("le", *by), "bucket")
    return f"histogram_quantile({q}, {agg(rate(family.bucket(**matchers)), labels)}) >= 0"


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
    """Per-bucket counts for heatmaps and distribution bars (target format ``heatmap``).

    Over the range (an instant query): ``increase(x_bucket[$__range])``, one
    window, true totals. Over time (a heatmap): each cell is one query step
    ($__interval) wide, while a rate needs a longer window
    ($__rate_interval), so consecutive windows overlap and
    ``increase(x_bucket[$__rate_interval])`` per step would count every
    observation in several cells. The per-second rate over the window times
    the step has no such overlap: summed over the cells, it gives each
    observation once.
    """
    buckets = family.bucket(**matchers)
    if over_range:
        return agg(increase_range(buckets), ("le",))
    return f"{agg(rate(buckets), ('le',))} * {STEP_SECONDS}"


# Recording rules (alerts/groups/license.py) the license panels read, so that the rules' guards apply:
# an expiry of 0 (unknown) is dropped, a limit of 0 gives no ratio (not +Inf). Replicas reporting one
# license are already collapsed there with max (a sum would multiply a timestamp).
LICENSE_EXPIRY = "license_tier:clary_license_expiry_timestamp_seconds:max"
LICENSE_COMPLIANCE = "license_tier_limit:clary_license_usage_per_limit:ratio"


def days_to_expiry(by: Iterable[str] = ("license",), **matchers: str | Match) -> str:
    """Days until each license expires; 0 once it has expired (a negative count of days reads as nonsense)."""
    expiry = agg(recorded(LICENSE_EXPIRY, **matchers), by, op="max")
    return f"clamp_min(({expiry} - time()) / 86400, 0)"


def compliance(by: Iterable[str] = ("license", "limit"), **matchers: str | Match) -> str:
    """usage / limit per license and limit (licenses with a limit of 0 have none)."""
    return agg(recorded(LICENSE_COMPLIANCE, **matchers), by, op="max")
