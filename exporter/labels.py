"""Label guard: every label value passes through here before it reaches a metric.

Values are checked against the catalog's allow-lists (replaceable from the
config file), out-of-set values become the label's fallback, and each family
has a series budget: a new series past the budget has its open-ended labels
replaced by ``other`` and ``clary_exporter_label_overflow_total`` counts it.
Cardinality is therefore bounded by construction, whatever the input.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from prometheus_client import Counter

from exporter.catalog import LabelSpec, MetricSpec

OVERFLOW_VALUE = "other"


class LabelRejected(ValueError):
    """A value for a label that has no fallback (e.g. ``outcome``, ``code``)."""

    def __init__(self, label: str, value: object, allowed: Sequence[str] | None = None):
        self.label = label
        self.value = value
        hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
        super().__init__(f"invalid value for label {label!r}{hint}")


def _valid_code(value: object) -> str:
    try:
        code = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise LabelRejected("code", value) from None
    if not 100 <= code <= 599:
        raise LabelRejected("code", value)
    return str(code)


def _folds(label: LabelSpec) -> bool:
    """Whether a label is open-ended and so folds into ``other`` past the budget.

    ``code`` has no value list but is bounded by validation (100..599); folding
    it would expose ``code="other"``, outside its contract, and hide 5xx
    responses from error-rate alerts.
    """
    return not label.fixed and label.name != "code"


class LabelGuard:
    """Normalises label values and enforces per-family series budgets."""

    def __init__(self, overflow: Counter, allow_lists: Mapping[str, Sequence[str]] | None = None):
        self._overflow = overflow
        self._allow = {name: frozenset(values) for name, values in (allow_lists or {}).items()}
        self._series: dict[str, set[tuple[str, ...]]] = {}
        self._lock = threading.Lock()

    def allowed(self, label: LabelSpec) -> frozenset[str] | None:
        if label.name in self._allow and label.configurable:
            return self._allow[label.name]
        return frozenset(label.values) if label.values is not None else None

    def value(self, label: LabelSpec, raw: object) -> str:
        """One label value, normalised; raises LabelRejected when it has no fallback."""
        if label.name == "code":
            return _valid_code(raw)
        if label.name == "method" and isinstance(raw, str):
            raw = raw.upper()
        elif label.name == "tier" and isinstance(raw, str):
            raw = raw.lower()
        allowed = self.allowed(label)
        if allowed is None:
            if isinstance(raw, str) and raw:
                return raw
        elif raw in allowed:
            return raw  # type: ignore[return-value]
        if label.fallback is None:
            raise LabelRejected(label.name, raw, sorted(allowed) if allowed else None)
        return label.fallback

    def values(self, metric: MetricSpec, raw: Sequence[object]) -> tuple[str, ...]:
        """All label values of one sample, normalised and within budget."""
        values = tuple(self.value(label, v) for label, v in zip(metric.labels, raw, strict=True))
        return self.admit(metric, values)

    def admit(self, metric: MetricSpec, values: tuple[str, ...]) -> tuple[str, ...]:
        """Admit a series or fold its open-ended labels into ``other``."""
        with self._lock:
            seen = self._series.setdefault(metric.name, set())
            if values in seen:
                return values
            if len(seen) < metric.budget:
                seen.add(values)
                return values
            folded = tuple(
                OVERFLOW_VALUE if _folds(label) else v for label, v in zip(metric.labels, values)
            )
            seen.add(folded)
        for label, before, after in zip(metric.labels, values, folded):
            if before != after:
                self._overflow.labels(metric.name, label.name).inc()
        return folded
