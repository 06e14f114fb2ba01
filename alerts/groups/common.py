"""What every rule group is built with: :class:`RuleGroup` and a few PromQL shapes.

Expressions are composed from :mod:`exporter.promql`, so catalog metric
names, matcher labels and values and ``by`` labels are checked when the rules
are built. Recorded series (``level:metric:operations``) are not catalog
metrics; :meth:`RuleGroup.series` is how an expression names one, and it
refuses a name the group has not recorded yet, so a misspelt recorded name
fails the build too instead of yielding an alert that never fires.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from exporter.catalog import CATALOG
from exporter.promql import TARGET_LABELS, Family, Match, agg, increase, rate, selector

from ..config import SEVERITIES, Config, num

# Labels a recorded series' level may name: every catalog label, ``le`` of
# histogram buckets and the target labels.
KNOWN_LABELS = frozenset({label.name for s in CATALOG for label in s.labels} | {"le"} | TARGET_LABELS)


def _expr(text: str) -> str:
    """Multi-line PromQL as written in the group modules, without the indentation."""
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line)
    return "\n".join(line[indent:] for line in lines)


def level_labels(name: str) -> tuple[str, ...]:
    """The labels a recorded series keeps, read from its level: ``tier_le:...`` -> (tier, le).

    Follows the Prometheus naming convention ``level:metric:operations``; a
    level that is not a ``_``-joined run of known labels is refused.
    """
    parts = name.split(":")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"recorded series {name!r} is not named level:metric:operations")
    words = parts[0].split("_")

    def split(start: int) -> tuple[str, ...] | None:
        if start == len(words):
            return ()
        for end in range(len(words), start, -1):
            label = "_".join(words[start:end])
            rest = split(end) if label in KNOWN_LABELS else None
            if rest is not None:
                return (label, *rest)
        return None

    labels = split(0)
    if labels is None:
        raise ValueError(f"recorded series {name!r}: level {parts[0]!r} is not made of known labels")
    return labels


class RuleGroup:
    """One Prometheus rule group under construction.

    Prometheus runs groups concurrently (promtool in no fixed order) and the
    rules of a group in order, so an expression may read only series recorded
    earlier in its own group: then it always sees this evaluation's values.
    :meth:`series` enforces exactly that.
    """

    def __init__(self, name: str, cfg: Config) -> None:
        self.name = name
        self.cfg = cfg
        self.rules: list[dict[str, Any]] = []
        self._recorded: dict[str, tuple[str, ...]] = {}

    def record(self, name: str, expr: str) -> str:
        """Append a recording rule; returns ``name`` for the expressions that read it."""
        labels = level_labels(name)
        if name in self._recorded:
            raise ValueError(f"{self.name}: {name} is recorded twice")
        self.rules.append({"record": name, "expr": _expr(expr)})
        self._recorded[name] = labels
        return name

    def record_share(self, part: str, share: str, part_rate: str, total: str) -> tuple[str, str]:
        """Record a filtered rate (``part``, from ``part_rate``) and its share of the recorded ``total``;
        (part, share). The part reads 0, not "no data", while ``total`` has traffic (:func:`rate_or_zero`),
        and the share is absent, not NaN, without traffic (:func:`ratio`)."""
        part = self.record(part, rate_or_zero(part_rate, total))
        return part, self.record(share, ratio(part, total))

    def series(self, name: str, **matchers: str | Match) -> str:
        """A selector of a series this group recorded above; matchers only on its level's labels."""
        if name not in self._recorded:
            close = difflib.get_close_matches(name, self._recorded, n=3, cutoff=0.8)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise KeyError(f"{name!r} is not recorded earlier in rule group {self.name}{hint}")
        labels = self._recorded[name]
        unknown = sorted(set(matchers) - set(labels))
        if unknown:
            raise ValueError(f"{name} keeps only the labels {list(labels)}; no {unknown}")
        return selector(name, matchers)

    def sum_by(self, name: str, by: Iterable[str]) -> str:
        """``sum by (...) (recorded)`` over labels the recorded series keeps."""
        series, by = self.series(name), tuple(by)
        unknown = [label for label in by if label not in self._recorded[name]]
        if unknown:
            raise ValueError(f"{name} keeps only the labels {list(self._recorded[name])}; cannot sum by {unknown}")
        return agg(series, by)

    def alert(
        self,
        name: str,
        expr: str,
        *,
        severity: str,
        team: str,
        summary: str,
        description: str,
        for_: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        if severity not in SEVERITIES:
            raise ValueError(f"{name}: unknown severity {severity}")
        rule: dict[str, Any] = {"alert": name, "expr": _expr(expr)}
        if for_:
            rule["for"] = for_
        rule["labels"] = {"severity": severity, "team": team, **(labels or {})}
        rule["annotations"] = {
            "summary": summary,
            "description": description,
            "runbook_url": f"{self.cfg.runbook_base_url}#{name.lower()}",
        }
        self.rules.append(rule)

    def build(self) -> dict[str, Any]:
        return {"name": self.name, "rules": self.rules}


# --- PromQL shapes the rules share ----------------------------------------


def sum_rate_over(family: Family, window: str, by: Iterable[str] = (), **matchers: str | Match) -> str:
    """``sum by (...) (rate(x{...}[window]))``."""
    return agg(rate(family.sel(**matchers), window), family.grouping(by))


def sum_increase_over(family: Family, window: str, by: Iterable[str] = (), **matchers: str | Match) -> str:
    """``sum by (...) (increase(x{...}[window]))``."""
    return agg(increase(family.sel(**matchers), window), family.grouping(by))


def bucket_rate_over(family: Family, window: str, by: Iterable[str]) -> str:
    """``sum by (..., le) (rate(x_bucket[window]))``: the input of ``histogram_quantile``."""
    return agg(rate(family.bucket(), window), family.grouping((*by, "le"), "bucket"))


def max_by(family: Family, by: Iterable[str]) -> str:
    """State every replica reports alike (license expiry, usage) is collapsed with max, not summed."""
    return agg(family.sel(), family.grouping(by), op="max")


def rate_or_zero(expr_rate: str, fallback: str) -> str:
    """A filtered rate that reads 0 (not "no data") while the unfiltered traffic exists."""
    return f"{expr_rate}\nor\n0 * {fallback}"


def ratio(numerator: str, denominator: str) -> str:
    """numerator / denominator, absent (not NaN or +Inf) when the denominator is 0."""
    return f"{numerator}\n/\n({denominator} > 0)"


def quantile_name(q: float) -> str:
    """0.95 -> p95, 0.999 -> p999."""
    return "p" + num(q * 100).replace(".", "")
