"""Counter and histogram updates summed in plain per-thread tables, folded in at scrape time.

prometheus_client takes a lock and runs checks on every ``inc`` and
``observe``; for the ingestion API, which records tens of updates per event
batch, that is most of its cost. :class:`DeferredUpdates` keeps, per thread
and per series, a running total (counters) or a running sum and bucket
counts (histograms) in lists that only that thread writes; a collect hook
folds what changed since the last fold into the metric objects just before
the family is collected, so every scrape sees every update made before it.
The same idea as the HTTP middlewares' accumulators (``exporter.instrument.requests``),
for any counter or histogram of the catalog.

Gauges are not deferred: a direct ``set`` after a deferred one would be
overwritten by the older value at the next fold. In prometheus_client's
multiprocess mode values live in files written at update time and no
collect hook runs, so there :func:`available` is False and callers record
directly.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from functools import partial
from itertools import compress
from operator import is_not

from prometheus_client import Histogram

from exporter.catalog import CATALOG
from exporter.instrument import _compat
from exporter.instrument.metrics import CatalogMetrics

# Distinct raw label tuples one thread keeps before it folds and starts over.
SERIES_LIMIT = 20_000


def available() -> bool:
    """Whether this prometheus_client keeps values in memory with the histogram layout folded into."""
    return _compat.deferred_available()


class _Table:
    """One thread's running totals; only that thread writes them (the fold only reads).

    ``inc`` and ``observe`` validate labels the first time the thread sees a
    series (``LabelRejected`` is raised then, as a direct update would) and
    afterwards cost a dict lookup and an addition or two.
    """

    __slots__ = ("owner", "thread", "counters", "histograms")

    def __init__(self, owner: DeferredUpdates):
        self.owner = owner
        self.thread = threading.current_thread()
        # (family, labels) -> [total, total already folded in, the child's inc]
        self.counters: dict[tuple, list] = {}
        # (family, labels) -> [bounds, [sum, bucket counts...], the same already folded in, histogram child]
        self.histograms: dict[tuple, list] = {}

    def inc(self, name: str, labels: tuple, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        try:
            self.counters[name, labels][0] += amount
        except KeyError:
            self.owner.new_series(self, name, labels)
            self.counters[name, labels][0] += amount

    def observe(self, name: str, labels: tuple, value: float) -> None:
        try:
            slot = self.histograms[name, labels]
        except KeyError:
            slot = self.owner.new_series(self, name, labels)
        sums = slot[1]
        sums[0] += value
        if value == value:  # NaN: in the sum but in no bucket, as Histogram.observe does
            sums[1 + bisect_left(slot[0], value)] += 1

    def observe_each(self, name: str, labels: Iterable[tuple], values: Iterable[float | None]) -> None:
        """``observe(name, x, v)`` for each pair of ``labels`` and ``values``; a None value is skipped.

        Values are grouped per series first, so a series is looked up once;
        its buckets are counted by sorting the values and finding each bound
        among them (in C), not by placing each value, unless there are only
        a few (``FEW_VALUES``).
        """
        for key, values in group_values(labels, values).items():
            try:  # self.histograms afresh each time: a new series may restart the table
                bounds, sums = self.histograms[name, key][:2]
            except KeyError:
                bounds, sums = self.owner.new_series(self, name, key)[:2]
            total = sum(values)
            sums[0] += total
            if total != total:  # NaN among them: in the sum but in no bucket, as Histogram.observe does
                values = [value for value in values if value == value]
            if len(values) <= FEW_VALUES:  # each placed on its own: fewer steps than walking the bounds
                for value in values:
                    sums[1 + bisect_left(bounds, value)] += 1
                continue
            values.sort()
            placed = 0  # values <= the bounds so far
            for index, bound in enumerate(bounds):
                below = bisect_right(values, bound)
                if below != placed:
                    sums[1 + index] += below - placed
                    placed = below
                    if placed == len(values):
                        break


# Up to this many distinct label tuples, values are grouped by one C pass per tuple.
FEW_SERIES = 4
# Up to this many values of one histogram series, each is placed in its bucket by bisection;
# more are sorted once and counted bound by bound.
FEW_VALUES = 8
_IS_VALUE = partial(is_not, None)


def kept_pairs(labels: Iterable[tuple], values: Iterable, keep: Callable[[object], object] = _IS_VALUE
               ) -> tuple[list[tuple], list]:
    """``labels`` and ``values`` (numbers or None) as lists, less the pairs whose value ``keep`` refuses
    (default: None), in C."""
    labels, values = list(labels), list(values)
    if _all_kept(values, keep):
        return labels, values
    kept = list(map(keep, values))
    return list(compress(labels, kept)), list(compress(values, kept))


def _all_kept(values: list, keep: Callable[[object], object]) -> bool:
    """Whether ``keep`` accepts every value; for the usual ``keep`` without calling it per value."""
    if keep is _IS_VALUE:
        try:
            sum(values)  # numbers add up in C; a None among them raises
        except TypeError:
            return False
        return True
    if keep is bool:
        return all(values)
    return all(map(keep, values))


def group_values(labels: Iterable[tuple], values: Iterable, keep: Callable[[object], object] = _IS_VALUE
                 ) -> dict[tuple, list]:
    """The values that ``keep`` accepts (default: not None) per label tuple, tuples in order of their first one.

    Bulk recording usually sees a handful of distinct tuples (labels are
    bounded): then each group is picked out in C (``compress``), otherwise
    value by value. The order decides which series the label guard admits
    first, as recording one value at a time would.
    """
    labels, values = kept_pairs(labels, values, keep)
    distinct = dict.fromkeys(labels)  # in order of first appearance, the order series are admitted in
    if len(distinct) == 1:
        return {labels[0]: values}
    if len(distinct) <= FEW_SERIES:
        return {key: list(compress(values, map(key.__eq__, labels))) for key in distinct}
    grouped: dict[tuple, list] = {key: [] for key in distinct}  # no KeyError per new series: they cost ~1 µs each
    for key, value in zip(labels, values):
        grouped[key].append(value)
    return grouped


class DeferredUpdates:
    """Per-thread running totals for the catalog's counters and histograms; one per :class:`CatalogMetrics`.

    Also runs *sources* before every family is collected: callables that
    record work they held back (``exporter.ingest.backlog.EventBacklog``), so what
    they record is folded in by the same scrape.
    """

    def __init__(self, metrics: CatalogMetrics):
        self._metrics = metrics
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sources: list[Callable[[], None]] = []
        # Per family, the series any thread deferred: what its collect hook folds in.
        self._series: dict[str, list[tuple[_Table, tuple]]] = {}
        for s in CATALOG:
            if not s.collected:
                self._series[s.name] = []
                metrics.add_collect_hook(lambda name=s.name: self.fold(name), [s.name])

    def add_source(self, source: Callable[[], None]) -> None:
        """Run ``source`` (thread-safe, cheap when idle) before any catalog family is collected."""
        self._sources.append(source)

    def table(self) -> _Table:
        """This thread's table."""
        try:
            return self._local.table
        except AttributeError:
            with self._lock:
                self._release_finished_locked()
            table = self._local.table = _Table(self)
            return table

    def _release_finished_locked(self) -> None:
        """Fold in and forget the tables of threads that have ended (checked when a thread starts one)."""
        for table in {entry[0] for series in self._series.values() for entry in series}:
            if not table.thread.is_alive():
                self._restart_locked(table)

    def new_series(self, table: _Table, name: str, labels: tuple) -> list:
        """A series ``table`` updates for the first time: its child (labels checked now) and slot."""
        child = self._metrics.child(name, *labels)
        histogram = isinstance(child, Histogram)
        if histogram:
            bounds = _compat.histogram_parts(child).bounds
            zero = [0.0] + [0] * len(bounds)
            slot = [bounds, zero, zero[:], child]
        else:
            slot = [0, 0, _compat.counter_inc(child)]
        with self._lock:
            if len(table.counters) + len(table.histograms) >= SERIES_LIMIT:
                self._restart_locked(table)
            (table.histograms if histogram else table.counters)[name, labels] = slot
            self._series[name].append((table, labels))
        return slot

    def _restart_locked(self, table: _Table) -> None:
        """Fold and forget everything ``table`` holds: raw label tuples are bounded only here.

        Many raw values fold into one label value (``other``); without this a
        flood of distinct raw values would grow the table without end.
        """
        for name, series in self._series.items():
            self._fold_locked(name)
            series[:] = [entry for entry in series if entry[0] is not table]
        table.counters = {}
        table.histograms = {}

    def fold(self, name: str) -> None:
        """Fold what family ``name`` gained since the last fold into its metric objects (sources first)."""
        for source in self._sources:
            source()
        with self._lock:
            self._fold_locked(name)

    def _fold_locked(self, name: str) -> None:
        for table, labels in self._series[name]:
            counter = table.counters.get((name, labels))
            if counter is not None:
                total = counter[0]
                if total != counter[1]:
                    counter[2](total - counter[1])
                    counter[1] = total
                continue
            _, sums, folded, child = table.histograms[name, labels]
            now = sums[:]  # one consistent copy (no GIL release while copying)
            if now != folded:
                _compat.fold_histogram(child, now, folded, 1)
                folded[:] = now
