"""Label guard: every label value passes through here before it reaches a metric.

Values are checked against the catalog's allow-lists (replaceable from the
config file), out-of-set values become the label's fallback, routes lose
the identifiers a raw path carries (:func:`route_label`), and each family
has a series budget that is a hard cap (:meth:`LabelGuard.admit`): past it,
new label combinations fold into ``other`` and
``clary_exporter_label_overflow_total`` counts each folded label.
Cardinality is therefore bounded by construction, whatever the input.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from math import prod
from pathlib import Path

from prometheus_client import Counter

from exporter.catalog import LabelSpec, MetricSpec

OVERFLOW_VALUE = "other"
UNMATCHED = "unmatched"
PARAM = "{param}"
# What a route may be, past which it is not a template at all (the event schema's limit).
MAX_ROUTE_LENGTH = 200
MAX_ROUTE_SEGMENTS = 16
# A segment this long is a token, a slug or an encoded blob: no route word is.
LONG_TOKEN = 20
# Up to this share of a family's budget is kept for folded series (``route="other"``, ``code="5xx"``).
FOLDED_SHARE = 0.1
CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# Where worker processes share the series each family admitted (multiprocess mode), in its directory.
SHARED_SERIES_GLOB = "clary_series_*.jsonl"

_NOT_A_TEMPLATE = re.compile(r"[\s?#\x00-\x1f\x7f]")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,31})(?::[^{}/]*)?\}")  # {name}, {name:convertor}
_WORD_CHARS = re.compile(r"[A-Za-z0-9._~:-]*")
_SEPARATOR = re.compile(r"[-_.~:]")
_HEX = re.compile(r"[0-9a-fA-F]{8,}")
_DIGIT = re.compile(r"[0-9]")
_LETTER_DIGIT_SWITCH = re.compile(r"[A-Za-z](?=[0-9])|[0-9](?=[A-Za-z])")


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


# --- routes --------------------------------------------------------------------


def _identifier(text: str) -> bool:
    """Whether a path segment (or a placeholder's name) looks like an identifier, not a route word.

    Route words are short and made of letters, with at most a version-like
    digit or three (``documents``, ``v1``, ``oauth2``, ``getUserInfo``).
    Identifiers are anything else: characters outside ``A-Z a-z 0-9 . _ ~ : -``
    (an e-mail's ``@``, ``%``-encoding, ``+``, non-ASCII), 20 characters or
    more, 8 or more hex digits (hashes, UUIDs, object ids), or digits that
    come all alone (``42``), with a separator (``raw-user-carol-99``,
    ``2024-05-01``, ``1.2.3``), four or more of them (``user12345``), or
    interleaved with letters (``a1b2``).
    """
    if len(text) >= LONG_TOKEN or not _WORD_CHARS.fullmatch(text) or _HEX.search(text):
        return True
    digits = len(_DIGIT.findall(text))
    if not digits:
        return False
    return (digits == len(text) or digits >= 4 or _SEPARATOR.search(text) is not None
            or len(_LETTER_DIGIT_SWITCH.findall(text)) >= 3)


def _segment(segment: str) -> str:
    """One path segment: kept when it is route words and ``{name}`` placeholders, else ``{param}``.

    A placeholder's convertor or pattern is dropped (``{id:int}`` -> ``{id}``),
    as the ASGI integration does with Starlette's templates.
    """
    if not segment:
        return segment
    if "{" not in segment and "}" not in segment:
        return PARAM if _identifier(segment) else segment
    rest = _PLACEHOLDER.sub("", segment)
    if ("{" in rest or "}" in rest or (rest and _identifier(rest))
            or any(map(_identifier, _PLACEHOLDER.findall(segment)))):
        return PARAM
    return _PLACEHOLDER.sub(r"{\1}", segment)


def route_label(value: object) -> str:
    """A ``route`` label value: a template with every identifier-like segment replaced by ``{param}``.

    ``/users/raw-user-carol-99`` -> ``/users/{param}``; ``/api/v1/documents/{id}``
    is kept. A value that is no route template at all (no leading ``/``,
    whitespace, a query or fragment, a ``.``/``..`` segment, over 200
    characters or 16 segments) is ``other``; an empty one ``unmatched``; the
    middlewares' own ``unmatched`` and ``other`` pass. Rules and examples:
    docs/metrics.md, "Routes".
    """
    if not isinstance(value, str) or not value:
        return UNMATCHED
    if value in (UNMATCHED, OVERFLOW_VALUE):
        return value
    if value[0] != "/" or len(value) > MAX_ROUTE_LENGTH or _NOT_A_TEMPLATE.search(value):
        return OVERFLOW_VALUE
    segments = value.split("/")
    if len(segments) > MAX_ROUTE_SEGMENTS + 1 or "." in segments or ".." in segments:
        return OVERFLOW_VALUE
    return "/".join(map(_segment, segments))


# --- the series budget --------------------------------------------------------------


def _folds(label: LabelSpec) -> bool:
    """Whether a label is open-ended and so folds into ``other`` as soon as the budget is reached.

    ``code`` folds into its class (``5xx``) first, so that error-rate
    queries (``code=~"5.."``) still see failures; labels from fixed sets
    (tier, method, outcome) keep their value until the last series.
    """
    return not label.fixed and label.name != "code"


def _fold_value(label: LabelSpec, value: str) -> str:
    if label.name == "code":
        return f"{value[0]}xx" if value.isdigit() else OVERFLOW_VALUE
    return OVERFLOW_VALUE if _folds(label) else value


class _Budget:
    """One family's admitted series (in this process) and where the hard cap splits them."""

    def __init__(self, metric: MetricSpec, allowed_sizes: Sequence[int]):
        # Distinct tuples a fold can give: each fixed label's values, each code class.
        folded = prod(len(CODE_CLASSES) if label.name == "code" else 1 if _folds(label) else size
                      for label, size in zip(metric.labels, allowed_sizes))
        reserve = 1 + min(folded, int(metric.budget * FOLDED_SHARE))  # + the catch-all series
        self.seen: set[tuple[str, ...]] = set()
        self.exact = metric.budget - reserve  # new series kept as they are while fewer than this
        self.last = metric.budget - 1  # folded series while fewer than this; then only the catch-all
        self.catch_all = (OVERFLOW_VALUE,) * len(metric.labels)

    def synced(self):
        """Hold ``seen`` up to date (and to itself) while a new series is decided."""
        return nullcontext()

    def add(self, values: tuple[str, ...]) -> None:
        self.seen.add(values)


class _SharedBudget(_Budget):
    """A family's admitted series shared by every worker process of a multiprocess directory.

    prometheus_client's multiprocess mode sums each worker's files, so a
    budget per process would allow workers x budget series. Admitted
    tuples go to an append-only file of JSON lines, read and appended under
    an exclusive ``flock``; each process keeps what it has read and where it
    stopped, so deciding a new series reads only what other workers admitted
    since. Reached only for tuples this process has not seen.
    """

    def __init__(self, metric: MetricSpec, allowed_sizes: Sequence[int], path: Path):
        super().__init__(metric, allowed_sizes)
        self._path = path
        self._offset = 0
        self._fd = -1
        self._pid = -1

    @contextmanager
    def synced(self) -> Iterator[None]:
        if self._pid != os.getpid():  # first use, or a forked worker: flock needs its own open file
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            self._pid = os.getpid()
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            self._read()
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _read(self) -> None:
        size = os.fstat(self._fd).st_size
        if size <= self._offset:
            return
        data = os.pread(self._fd, size - self._offset, self._offset)
        if not data.endswith(b"\n"):  # a writer died mid-line (we hold the lock): close the line, skip it
            os.write(self._fd, b"\n")
            size += 1
        for line in data.splitlines():
            try:
                self.seen.add(tuple(json.loads(line)))
            except ValueError:
                continue
        self._offset = size

    def add(self, values: tuple[str, ...]) -> None:
        if values not in self.seen:
            self.seen.add(values)
            line = (json.dumps(values) + "\n").encode()
            os.write(self._fd, line)
            self._offset += len(line)


class LabelGuard:
    """Normalises label values and holds every family to its series budget."""

    def __init__(self, overflow: Counter, allow_lists: Mapping[str, Sequence[str]] | None = None,
                 shared_dir: Path | None = None):
        """``shared_dir``: where the worker processes of multiprocess mode share admitted series."""
        self._overflow = overflow
        self._allow = {name: frozenset(values) for name, values in (allow_lists or {}).items()}
        self._budgets: dict[str, _Budget] = {}
        self._lock = threading.Lock()
        self._shared_dir = shared_dir

    def allowed(self, label: LabelSpec) -> frozenset[str] | None:
        if label.name in self._allow and label.configurable:
            return self._allow[label.name]
        return frozenset(label.values) if label.values is not None else None

    def value(self, label: LabelSpec, raw: object) -> str:
        """One label value, normalised; raises LabelRejected when it has no fallback."""
        if label.name == "code":
            return _valid_code(raw)
        if label.name == "route":
            return route_label(raw)
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

    def normalised(self, metric: MetricSpec, raw: Sequence[object]) -> tuple[str, ...]:
        """All label values of one sample, normalised (before the budget)."""
        return tuple(self.value(label, v) for label, v in zip(metric.labels, raw, strict=True))

    def values(self, metric: MetricSpec, raw: Sequence[object]) -> tuple[str, ...]:
        """All label values of one sample, normalised and within budget."""
        return self.admit(metric, self.normalised(metric, raw))

    def _budget(self, metric: MetricSpec) -> _Budget:
        sizes = [len(self.allowed(label) or ()) + (label.fallback is not None) for label in metric.labels]
        if self._shared_dir is None:
            return self._budgets.setdefault(metric.name, _Budget(metric, sizes))
        path = self._shared_dir / SHARED_SERIES_GLOB.replace("*", metric.name)
        return self._budgets.setdefault(metric.name, _SharedBudget(metric, sizes, path))

    def admit(self, metric: MetricSpec, values: tuple[str, ...]) -> tuple[str, ...]:
        """The series ``values`` is recorded in: itself, or folded so the family stays within budget.

        A family never holds more than ``metric.budget`` series. New ones are
        kept as they are until the budget less a reserve is used (the reserve:
        a tenth of the budget at most, what folding can give, plus one).
        Then open-ended labels fold into ``other`` and ``code`` into its
        class (``503`` -> ``5xx``), while the budget lasts; the last series
        is ``other`` on every label, where everything else goes. Each label
        a fold changes counts once in ``clary_exporter_label_overflow_total``.
        One set lookup per call; called once per new raw label tuple (the
        callers cache the result).
        """
        with self._lock:
            budget = self._budgets.get(metric.name) or self._budget(metric)
            seen = budget.seen
            if values in seen:
                return values
            with budget.synced():
                if values in seen:
                    return values
                if len(seen) < budget.exact:
                    budget.add(values)
                    return values
                folded = tuple(_fold_value(label, v) for label, v in zip(metric.labels, values))
                if folded not in seen:
                    if len(seen) >= budget.last:
                        folded = budget.catch_all
                    budget.add(folded)
        for label, before, after in zip(metric.labels, values, folded):
            if before != after:
                self._overflow.labels(metric.name, label.name).inc()
        return folded

    def series_of(self, metric: MetricSpec, raw: Sequence[object]) -> tuple[str, ...] | None:
        """The series :meth:`values` gave ``raw``: its own, else a folded one admitted (the
        shared catch-all last); None when none is. Admits and counts nothing."""
        values = self.normalised(metric, raw)
        folded = tuple(_fold_value(label, v) for label, v in zip(metric.labels, values))
        with self._lock:
            budget = self._budgets.get(metric.name)
            seen = budget.seen if budget is not None else set()
            for candidate in (values, folded, budget.catch_all if budget is not None else None):
                if candidate in seen:
                    return candidate
            return None

    def release(self, metric: MetricSpec, values: tuple[str, ...]) -> None:
        """Give a removed series' place in the family's budget back, for a new series to take."""
        with self._lock:
            budget = self._budgets.get(metric.name)
            if budget is not None:
                budget.seen.discard(values)

    def exact_limit(self, metric: MetricSpec) -> int:
        """How many series of ``metric`` are kept as they are before new ones fold."""
        with self._lock:
            return (self._budgets.get(metric.name) or self._budget(metric)).exact

    def series(self, metric: MetricSpec) -> int:
        """Series of ``metric`` admitted so far (never more than its budget)."""
        with self._lock:
            found = self._budgets.get(metric.name)
            return len(found.seen) if found is not None else 0
