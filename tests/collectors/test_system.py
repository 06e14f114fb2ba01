"""SystemCollector with the real psutil and with a fake one for the edge cases."""

from __future__ import annotations

import logging
import threading
from collections import namedtuple

import psutil
from prometheus_client import CollectorRegistry, generate_latest

from exporter.collectors.base import CollectorSet
from exporter.collectors.system import SystemCollector

UP = ("clary_exporter_collector_up", {"collector": "system"})
ERRORS = ("clary_exporter_collector_errors_total", {"collector": "system"})
DISK = ("clary_system_disk_read_bytes_total", "clary_system_disk_written_bytes_total")
RX = "clary_system_network_received_bytes_total"
TX = "clary_system_network_transmitted_bytes_total"

CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait irq softirq steal guest guest_nice")
VirtualMemory = namedtuple("VirtualMemory", "total available")
DiskIo = namedtuple("DiskIo", "read_bytes write_bytes")
NetIo = namedtuple("NetIo", "bytes_sent bytes_recv")


def cpu(**fields: float) -> CpuTimes:
    return CpuTimes(**{name: fields.get(name, 0.0) for name in CpuTimes._fields})


class FakePsutil:
    """The psutil calls the collector makes, with settable results."""

    def __init__(self) -> None:
        self.times = cpu()
        self.memory = VirtualMemory(total=16_000, available=6_000)
        self.disk: DiskIo | None = DiskIo(read_bytes=111, write_bytes=222)
        self.nics = {"lo": NetIo(1, 1), "eth0": NetIo(bytes_sent=10, bytes_recv=20)}
        self.fail_memory = False

    def cpu_times(self) -> CpuTimes:
        return self.times

    def virtual_memory(self) -> VirtualMemory:
        if self.fail_memory:
            raise OSError("/proc/meminfo unreadable")
        return self.memory

    def disk_io_counters(self) -> DiskIo | None:
        return self.disk

    def net_io_counters(self, pernic: bool = False) -> dict[str, NetIo]:
        assert pernic
        return self.nics


def make(**kw) -> tuple[CollectorRegistry, SystemCollector]:
    collector = SystemCollector(**kw)
    registry = CollectorRegistry()
    registry.register(CollectorSet([collector]))
    return registry, collector


def interfaces(registry: CollectorRegistry, family: str) -> set[str]:
    return {
        s.labels["interface"]
        for metric in registry.collect()
        if metric.name == family.removesuffix("_total")
        for s in metric.samples
    }


# --- real psutil ------------------------------------------------------------


def test_real_psutil_values():
    registry, _ = make()
    value = registry.get_sample_value
    assert value(*UP) == 1.0
    assert value(*ERRORS) == 0.0
    total = value("clary_system_memory_total_bytes")
    assert total == float(psutil.virtual_memory().total)
    assert 0 < value("clary_system_memory_used_bytes") <= total
    assert 0.0 <= value("clary_system_cpu_usage_ratio") <= 1.0

    if psutil.disk_io_counters() is None:
        assert all(value(name) is None for name in DISK)
    else:
        assert all(value(name) >= 0 for name in DISK)

    expected = sorted(n for n in psutil.net_io_counters(pernic=True) if not n.startswith("lo"))[:32]
    assert interfaces(registry, RX) == set(expected)
    assert interfaces(registry, TX) == set(expected)
    assert value(RX, {"interface": "lo"}) is None
    for name in expected:
        assert value(RX, {"interface": name}) >= 0
        assert value(TX, {"interface": name}) >= 0
    text = generate_latest(registry).decode()
    assert "# TYPE clary_system_network_received_bytes_total counter" in text
    assert 'interface="lo"' not in text


# --- fake psutil ------------------------------------------------------------


def test_fake_values_exact():
    registry, _ = make(psutil_module=FakePsutil())
    value = registry.get_sample_value
    assert value("clary_system_memory_total_bytes") == 16_000.0
    assert value("clary_system_memory_used_bytes") == 10_000.0
    assert value("clary_system_disk_read_bytes_total") == 111.0
    assert value("clary_system_disk_written_bytes_total") == 222.0
    assert value(RX, {"interface": "eth0"}) == 20.0
    assert value(TX, {"interface": "eth0"}) == 10.0
    assert interfaces(registry, RX) == {"eth0"}


def test_cpu_ratio_is_since_previous_scrape_and_independent_of_thread():
    """Primed at construction; scraping from a new thread (as HTTP servers do) still works."""
    fake = FakePsutil()
    fake.times = cpu(user=100.0, idle=900.0)
    registry, _ = make(psutil_module=fake)
    fake.times = cpu(user=130.0, idle=970.0)
    seen: list[float | None] = []
    worker = threading.Thread(target=lambda: seen.append(registry.get_sample_value("clary_system_cpu_usage_ratio")))
    worker.start()
    worker.join()
    assert seen == [0.3]
    # No time passed: the last ratio is kept rather than a 0/0.
    assert registry.get_sample_value("clary_system_cpu_usage_ratio") == 0.3
    # iowait is idle; guest is already inside user, so not counted twice.
    fake.times = cpu(user=140.0, guest=10.0, idle=1020.0, iowait=40.0)
    assert registry.get_sample_value("clary_system_cpu_usage_ratio") == 0.1


def test_disk_counters_none_omits_disk_families_only():
    fake = FakePsutil()
    fake.disk = None
    registry, _ = make(psutil_module=fake)
    text = generate_latest(registry).decode()
    assert "clary_system_disk_" not in text
    assert registry.get_sample_value(*UP) == 1.0
    assert registry.get_sample_value(*ERRORS) == 0.0
    assert registry.get_sample_value("clary_system_memory_total_bytes") == 16_000.0
    assert registry.get_sample_value(RX, {"interface": "eth0"}) == 20.0


def test_interfaces_bounded_sorted_and_logged_once(caplog):
    fake = FakePsutil()
    fake.nics = {f"veth{i:02d}": NetIo(bytes_sent=i, bytes_recv=2 * i) for i in range(40)}
    fake.nics.update({"lo": NetIo(5, 5), "lo0": NetIo(5, 5)})
    caplog.set_level(logging.WARNING, logger="exporter.collectors.system")
    registry, _ = make(psutil_module=fake)
    expected = {f"veth{i:02d}" for i in range(32)}
    assert interfaces(registry, RX) == expected
    assert interfaces(registry, TX) == expected
    assert registry.get_sample_value(RX, {"interface": "veth31"}) == 62.0
    assert registry.get_sample_value(RX, {"interface": "veth32"}) is None
    assert registry.get_sample_value(*UP) == 1.0
    warnings = [r for r in caplog.records if r.name == "exporter.collectors.system"]
    assert len(warnings) == 1  # five scrapes above, one warning
    assert "veth39" in warnings[0].getMessage()


def test_psutil_raising_reports_down_and_counts_an_error():
    fake = FakePsutil()
    registry, _ = make(psutil_module=fake)
    assert registry.get_sample_value(*UP) == 1.0
    fake.fail_memory = True
    text = generate_latest(registry).decode()  # exactly one failing scrape
    assert 'clary_exporter_collector_up{collector="system"} 0.0' in text
    assert 'clary_exporter_collector_errors_total{collector="system"} 1.0' in text
    assert "clary_system_" not in text  # no partial output from a failed scrape
    fake.fail_memory = False
    assert registry.get_sample_value(*UP) == 1.0
    assert registry.get_sample_value(*ERRORS) == 1.0
