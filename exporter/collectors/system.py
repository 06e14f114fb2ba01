"""Host CPU, memory, disk and network metrics read through psutil at scrape time.

CPU usage is computed here from ``psutil.cpu_times()`` deltas kept on the
collector, not with ``psutil.cpu_percent(interval=None)``: psutil (7.x
checked) keeps that function's previous sample per *thread*, and a threaded
HTTP server scrapes from a fresh thread each time, so it would read 0.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client.core import Metric

from exporter.collectors.registry import register
from exporter.families import new_family

log = logging.getLogger(__name__)


def _busy_and_total(times: Any) -> tuple[float, float]:
    """Busy and total CPU seconds, counted the way psutil and htop count them.

    Linux already includes guest time in user/nice, and iowait is idle time.
    """
    fields = times._asdict()
    total = sum(fields.values()) - fields.get("guest", 0.0) - fields.get("guest_nice", 0.0)
    idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
    return total - idle, total


def _is_loopback(interface: str) -> bool:
    return interface.startswith("lo")


@register("system", help="CPU, memory, block I/O and network counters of this host")
class SystemCollector:
    """CPU, memory, block I/O and per-interface network counters of this host."""

    name = "system"

    def __init__(self, psutil_module: Any = None, max_interfaces: int = 32):
        if psutil_module is None:
            import psutil as psutil_module
        self._psutil = psutil_module
        self._max_interfaces = max_interfaces
        self._dropped_logged = False
        self._lock = threading.Lock()
        # Primed now so the first scrape reports usage since start-up, not 0.
        self._cpu_last = _busy_and_total(self._psutil.cpu_times())
        self._cpu_ratio = 0.0

    def collect(self) -> list[Metric]:
        return [*self._cpu(), *self._memory(), *self._disk(), *self._network()]

    def _cpu(self) -> list[Metric]:
        busy, total = _busy_and_total(self._psutil.cpu_times())
        with self._lock:
            last_busy, last_total = self._cpu_last
            elapsed = total - last_total
            if elapsed > 0:  # scrapes within one clock tick keep the last ratio
                ratio = (busy - last_busy) / elapsed
                self._cpu_ratio = min(1.0, max(0.0, ratio))
                self._cpu_last = (busy, total)
            ratio = self._cpu_ratio
        family = new_family("clary_system_cpu_usage_ratio")
        family.add_metric([], ratio)
        return [family]

    def _memory(self) -> list[Metric]:
        memory = self._psutil.virtual_memory()
        used = new_family("clary_system_memory_used_bytes")
        used.add_metric([], float(memory.total - memory.available))
        total = new_family("clary_system_memory_total_bytes")
        total.add_metric([], float(memory.total))
        return [used, total]

    def _disk(self) -> list[Metric]:
        counters = self._psutil.disk_io_counters()
        if counters is None:  # no block devices visible (containers)
            return []
        read = new_family("clary_system_disk_read_bytes_total")
        read.add_metric([], float(counters.read_bytes))
        written = new_family("clary_system_disk_written_bytes_total")
        written.add_metric([], float(counters.write_bytes))
        return [read, written]

    def _network(self) -> list[Metric]:
        per_nic = self._psutil.net_io_counters(pernic=True)
        names = sorted(name for name in per_nic if not _is_loopback(name))
        if len(names) > self._max_interfaces and not self._dropped_logged:
            self._dropped_logged = True
            log.warning(
                "%d network interfaces, exposing the first %d by name; dropped: %s",
                len(names), self._max_interfaces, ", ".join(names[self._max_interfaces:]),
            )
        received = new_family("clary_system_network_received_bytes_total")
        transmitted = new_family("clary_system_network_transmitted_bytes_total")
        for name in names[: self._max_interfaces]:
            received.add_metric([name], float(per_nic[name].bytes_recv))
            transmitted.add_metric([name], float(per_nic[name].bytes_sent))
        return [received, transmitted]
