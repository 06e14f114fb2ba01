"""``Recorder.batch()``: the recording API for many calls in a row from one thread."""

from __future__ import annotations

from exporter.instrument.recorder import Recorder


class RecorderBatch(Recorder):
    """What :meth:`Recorder.batch` returns: the recorder's methods, with cheaper metric updates.

    Counters and histograms go into this thread's running totals
    (:mod:`exporter.instrument.deferred`), folded into the metric objects when they are
    scraped; gauges are set once per series at ``commit()`` (the last value).
    Shares every other piece of state with its recorder (a shallow copy of
    it), so a user seen or a session started through the batch is seen by
    both. Use a batch from the thread that made it; commit it once.
    """

    def __init__(self, recorder: Recorder):  # shares the recorder's state, builds nothing
        self.__dict__.update(recorder.__dict__)
        if recorder._deferred is not None:  # else (multiprocess mode) counters and histograms go straight in
            table = recorder._deferred.table()
            self._inc = table.inc
            self._observe = table.observe
            self.observe_each = table.observe_each
        self._gauges: dict[tuple, list] = {}  # (name, labels) -> [child, last value]

    def _set(self, name: str, labels: tuple, value: float) -> None:
        # Re-inserted on every set: raw labels that fold into one series (``other``) are
        # set at commit in the order of their last values, so the last value wins there too.
        slot = self._gauges.pop((name, labels), None)
        self._gauges[name, labels] = [self._child(name, *labels) if slot is None else slot[0], value]

    def http_request(
        self, tier: str, method: str, route: str, code: int, duration: float, trace_id: str | None = None
    ) -> None:
        """As :meth:`Recorder.http_request`, summed; a traced request goes straight in (exemplar)."""
        if trace_id is not None:
            Recorder.http_request(self, tier, method, route, code, duration, trace_id)
            return
        self._inc("clary_http_requests_total", (tier, method, route, code))
        self._observe("clary_http_request_duration_seconds", (tier, method, route), duration)

    def commit(self) -> None:
        """Set the gauges (counters and histograms need nothing: scrapes fold them in)."""
        gauges, self._gauges = self._gauges, {}
        expiring = self._license_gauges
        for (name, labels), (child, value) in gauges.items():
            if name not in expiring.families:
                child.set(value)
        # License series may have been pruned since _set took their child: set them afresh, under its lock.
        expiring.set((name, labels, value) for (name, labels), (_, value) in gauges.items()
                     if name in expiring.families)
