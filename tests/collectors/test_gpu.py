"""GpuCollector against a fake pynvml: no GPU, failure, backoff, recovery, the original five readings.

What each reading is worth (dcgm-exporter's set, MIG, NOT_SUPPORTED per
reading) is in test_gpu_readings.py.

Every scrape goes through a real CollectorRegistry and CollectorSet. Note
that ``registry.get_sample_value`` runs a whole scrape per call; where the
collector's state must advance exactly once (errors, backoff) the tests
scrape once with ``generate_latest`` and read the parsed exposition.
"""

from __future__ import annotations

import logging
import sys

import pynvml  # the real bindings (nvidia-ml-py, a dependency): importing loads no driver
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.collectors.base import CollectorSet
from exporter.collectors.gpu import GpuCollector
from tests.collectors.fake_nvml import Device, FakeNvml, NVMLError

# Samples of one two_gpus() device: the info series, and every reading but the
# memory temperature (NOT_SUPPORTED by default) and MIG (none): utilization 2,
# memory 2, temperature, power, energy, 2 clocks, 9 clock event reasons, PCIe
# 2 + replays, encoder, decoder, 4 ECC counters, 2 retired-page counts and the
# pending flag, 2 remapped-row counts and 2 remap flags.
PER_DEVICE = 1 + 2 + 2 + 1 + 1 + 1 + 2 + 9 + 3 + 2 + 4 + 3 + 4


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --- helpers ----------------------------------------------------------------


def make(nvml=None, **kw) -> tuple[CollectorRegistry, GpuCollector]:
    collector = GpuCollector(nvml=nvml, **kw)
    registry = CollectorRegistry()
    registry.register(CollectorSet([collector]))
    return registry, collector


class Scrape:
    """One scrape, rendered by generate_latest and parsed back."""

    def __init__(self, registry: CollectorRegistry):
        self.text = generate_latest(registry).decode()
        self.samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(self.text)
            for s in family.samples
        }

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, tuple(sorted(labels.items()))))

    @property
    def up(self) -> float | None:
        return self.get("clary_exporter_collector_up", collector="gpu")

    @property
    def errors(self) -> float | None:
        return self.get("clary_exporter_collector_errors_total", collector="gpu")

    @property
    def devices(self) -> float | None:
        return self.get("clary_gpu_devices")

    def gpu_sample_count(self) -> int:
        """Per-device samples (clary_gpu_devices left out)."""
        return sum(1 for name, _ in self.samples if name.startswith("clary_gpu_") and name != "clary_gpu_devices")


def two_gpus() -> FakeNvml:
    return FakeNvml([
        Device("GPU-aaaa", utilization=37, memory_used=1 << 30, memory_total=80 << 30,
               temperature=54, power_mw=123456),
        Device(b"GPU-bbbb", utilization=100, memory_used=0, memory_total=40 << 30,
               temperature=31, power_mw=70000),
    ])


# --- the real NVMLError ----------------------------------------------------------


def test_real_not_supported_exception_is_recognised():
    """The collector reads the real NVMLError's ``value``, not the fake's class."""
    nvml = two_gpus()

    def unsupported(handle):
        raise pynvml.NVMLError_NotSupported(pynvml.NVML_ERROR_NOT_SUPPORTED)

    nvml.nvmlDeviceGetPowerUsage = unsupported
    scrape = Scrape(make(nvml)[0])
    assert (scrape.up, scrape.errors) == (1.0, 0.0)
    assert scrape.get("clary_gpu_power_watts", gpu="0", uuid="GPU-aaaa") is None
    assert scrape.get("clary_gpu_temperature_celsius", gpu="0", uuid="GPU-aaaa") == 54.0


# --- values -----------------------------------------------------------------


def test_several_gpus_exact_values_and_labels():
    registry, _ = make(two_gpus())
    value = registry.get_sample_value
    a = {"gpu": "0", "uuid": "GPU-aaaa"}
    b = {"gpu": "1", "uuid": "GPU-bbbb"}  # bytes UUID decoded
    assert value("clary_gpu_utilization_ratio", a) == 0.37
    assert value("clary_gpu_utilization_ratio", b) == 1.0
    assert value("clary_gpu_memory_used_bytes", a) == float(1 << 30)
    assert value("clary_gpu_memory_total_bytes", a) == float(80 << 30)
    assert value("clary_gpu_memory_used_bytes", b) == 0.0
    assert value("clary_gpu_memory_total_bytes", b) == float(40 << 30)
    assert value("clary_gpu_temperature_celsius", a) == 54.0
    assert value("clary_gpu_temperature_celsius", b) == 31.0
    assert value("clary_gpu_power_watts", a) == 123.456
    assert value("clary_gpu_power_watts", b) == 70.0
    assert value("clary_exporter_collector_up", {"collector": "gpu"}) == 1.0
    assert value("clary_exporter_collector_errors_total", {"collector": "gpu"}) == 0.0
    scrape = Scrape(registry)
    assert scrape.gpu_sample_count() == 2 * PER_DEVICE
    assert 'clary_gpu_power_watts{gpu="0",uuid="GPU-aaaa"} 123.456' in scrape.text
    assert "# TYPE clary_gpu_utilization_ratio gauge" in scrape.text


def test_not_supported_field_is_omitted_for_that_device_only():
    nvml = two_gpus()
    nvml.device_errors[(1, "power")] = nvml.NVML_ERROR_NOT_SUPPORTED
    scrape = Scrape(make(nvml)[0])
    assert (scrape.up, scrape.errors) == (1.0, 0.0)
    assert scrape.get("clary_gpu_power_watts", gpu="1", uuid="GPU-bbbb") is None
    assert scrape.get("clary_gpu_power_watts", gpu="0", uuid="GPU-aaaa") == 123.456
    assert scrape.get("clary_gpu_temperature_celsius", gpu="1", uuid="GPU-bbbb") == 31.0
    assert scrape.gpu_sample_count() == 2 * PER_DEVICE - 1


# --- no GPU: a fact about the host, not a failure ----------------------------------


def assert_no_gpu(scrape: Scrape) -> None:
    """Up 1, no error, clary_gpu_devices 0 and not one per-device series."""
    assert (scrape.up, scrape.errors, scrape.devices) == (1.0, 0.0, 0.0)
    assert scrape.gpu_sample_count() == 0
    assert "clary_gpu_devices 0.0" in scrape.text
    assert [line for line in scrape.text.splitlines()
            if line.startswith("clary_gpu_") and not line.startswith("clary_gpu_devices ")] == []


def test_pynvml_not_importable_is_no_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    assert_no_gpu(Scrape(make()[0]))


@pytest.mark.parametrize("code", ["NVML_ERROR_LIBRARY_NOT_FOUND", "NVML_ERROR_DRIVER_NOT_LOADED"])
def test_init_without_library_or_driver_is_no_gpu(code):
    nvml = two_gpus()
    nvml.init_error = getattr(nvml, code)
    registry, _ = make(nvml)
    for _ in range(3):
        assert_no_gpu(Scrape(registry))
    assert nvml.init_calls == 1  # later scrapes wait for the backoff, and still say "no GPU"


def test_zero_devices_is_no_gpu_and_shuts_nvml_down():
    nvml = FakeNvml([])
    assert_no_gpu(Scrape(make(nvml)[0]))
    assert (nvml.init_calls, nvml.shutdown_calls, nvml.initialised) == (1, 1, False)


def test_devices_count_the_gpus():
    scrape = Scrape(make(two_gpus())[0])
    assert scrape.devices == 2.0
    assert "# TYPE clary_gpu_devices gauge" in scrape.text


# --- failing ------------------------------------------------------------------


@pytest.mark.parametrize("code", ["NVML_ERROR_UNKNOWN", "NVML_ERROR_GPU_IS_LOST"])
def test_init_failure_of_another_kind_counts_an_error(code):
    nvml = two_gpus()
    nvml.init_error = getattr(nvml, code)
    scrape = Scrape(make(nvml)[0])
    assert (scrape.up, scrape.errors) == (0.0, 1.0)
    assert scrape.gpu_sample_count() == 0


@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param(lambda n: setattr(n, "count_error", n.NVML_ERROR_UNKNOWN), id="count-unknown"),
        pytest.param(lambda n: n.device_errors.update({(1, "utilization"): n.NVML_ERROR_GPU_IS_LOST}),
                     id="utilization-gpu-lost"),
        pytest.param(lambda n: n.device_errors.update({(0, "uuid"): n.NVML_ERROR_UNKNOWN}), id="uuid-unknown"),
        pytest.param(lambda n: n.device_errors.update({(0, "power"): n.NVML_ERROR_GPU_IS_LOST}),
                     id="power-gpu-lost"),
    ],
)
def test_failure_mid_run_counts_an_error_and_shuts_down(break_it):
    nvml = two_gpus()
    registry, _ = make(nvml)
    first = Scrape(registry)
    assert (first.up, first.errors) == (1.0, 0.0)
    assert first.gpu_sample_count() == 2 * PER_DEVICE
    break_it(nvml)
    second = Scrape(registry)
    assert (second.up, second.errors) == (0.0, 1.0)
    assert second.gpu_sample_count() == 0  # no partial device list
    assert (nvml.shutdown_calls, nvml.initialised) == (1, False)


def test_shutdown_failing_too_is_tolerated():
    nvml = two_gpus()
    registry, _ = make(nvml)
    assert Scrape(registry).up == 1.0
    nvml.count_error = nvml.NVML_ERROR_GPU_IS_LOST

    def lost() -> None:
        raise NVMLError(nvml.NVML_ERROR_GPU_IS_LOST)

    nvml.nvmlShutdown = lost
    scrape = Scrape(registry)
    assert (scrape.up, scrape.errors) == (0.0, 1.0)


# --- backoff and recovery -------------------------------------------------------


def test_backoff_doubles_caps_and_recovery_brings_metrics_back():
    nvml = two_gpus()
    clock = Clock()
    registry, _ = make(nvml, clock=clock, initial_backoff=1.0, max_backoff=4.0)
    assert Scrape(registry).up == 1.0

    nvml.device_errors[(0, "temperature")] = nvml.NVML_ERROR_GPU_IS_LOST
    nvml.init_error = nvml.NVML_ERROR_UNKNOWN
    # (time, errors_total after the scrape, nvmlInit calls so far)
    timeline = [
        (0.0, 1, 1),    # the mid-run failure; next attempt at 1
        (0.5, 1, 1),    # waiting: no NVML call, no error
        (1.0, 2, 2),    # attempt fails; next at 1 + 2
        (2.9, 2, 2),
        (3.0, 3, 3),    # next at 3 + 4
        (6.9, 3, 3),
        (7.0, 4, 4),    # capped: next at 7 + 4, not 7 + 8
        (10.9, 4, 4),
        (11.0, 5, 5),   # next at 15
    ]
    for now, errors, init_calls in timeline:
        clock.now = now
        scrape = Scrape(registry)
        assert (scrape.up, scrape.errors, nvml.init_calls) == (0.0, errors, init_calls), now
        assert scrape.gpu_sample_count() == 0

    nvml.init_error = None
    nvml.device_errors.clear()
    clock.now = 14.9  # NVML works again, but the backoff is still respected
    scrape = Scrape(registry)
    assert (scrape.up, scrape.errors, nvml.init_calls) == (0.0, 5.0, 5)

    clock.now = 15.0
    scrape = Scrape(registry)
    assert (scrape.up, scrape.errors, nvml.init_calls) == (1.0, 5.0, 6)
    assert scrape.get("clary_gpu_power_watts", gpu="0", uuid="GPU-aaaa") == 123.456
    assert scrape.gpu_sample_count() == 2 * PER_DEVICE

    # A success resets the backoff: the next failure waits initial_backoff again.
    nvml.count_error = nvml.NVML_ERROR_UNKNOWN
    assert Scrape(registry).errors == 6.0
    nvml.count_error = None
    clock.now = 15.9
    assert Scrape(registry).up == 0.0
    clock.now = 16.0
    assert Scrape(registry).up == 1.0


def test_absent_is_retried_with_backoff_and_a_late_driver_is_picked_up():
    nvml = two_gpus()
    nvml.init_error = nvml.NVML_ERROR_DRIVER_NOT_LOADED
    clock = Clock()
    registry, _ = make(nvml, clock=clock, initial_backoff=10.0, max_backoff=300.0)
    assert_no_gpu(Scrape(registry))
    assert nvml.init_calls == 1
    nvml.init_error = None  # driver loaded later
    clock.now = 9.0
    assert_no_gpu(Scrape(registry))
    assert nvml.init_calls == 1
    clock.now = 10.0
    scrape = Scrape(registry)
    assert (scrape.up, scrape.errors, scrape.devices, nvml.init_calls) == (1.0, 0.0, 2.0, 2)
    assert scrape.get("clary_gpu_utilization_ratio", gpu="1", uuid="GPU-bbbb") == 1.0


def test_a_failure_after_no_gpu_is_a_failure():
    """No GPU, then a driver that loads but fails: up 0 and an error, not "no GPU"."""
    nvml = two_gpus()
    nvml.init_error = nvml.NVML_ERROR_DRIVER_NOT_LOADED
    clock = Clock()
    registry, _ = make(nvml, clock=clock, initial_backoff=1.0, max_backoff=1.0)
    assert_no_gpu(Scrape(registry))
    nvml.init_error = nvml.NVML_ERROR_UNKNOWN
    clock.now = 1.0
    scrape = Scrape(registry)
    assert (scrape.up, scrape.errors, scrape.devices) == (0.0, 1.0, None)
    clock.now = 1.5  # waiting after a failure: up 0, no "no GPU" claim
    scrape = Scrape(registry)
    assert (scrape.up, scrape.errors, scrape.devices) == (0.0, 1.0, None)


def test_state_transitions_are_logged_once(caplog):
    nvml = two_gpus()
    clock = Clock()
    registry, _ = make(nvml, clock=clock, initial_backoff=1.0, max_backoff=1.0)
    caplog.set_level(logging.DEBUG, logger="exporter.collectors.gpu")
    Scrape(registry)
    nvml.init_error = nvml.NVML_ERROR_UNKNOWN
    nvml.count_error = nvml.NVML_ERROR_UNKNOWN
    for now in (0.0, 0.5, 1.0, 2.0, 3.0):  # four failed attempts, one skipped
        clock.now = now
        assert Scrape(registry).up == 0.0
    nvml.init_error = nvml.count_error = None
    for now in (4.0, 5.0):
        clock.now = now
        assert Scrape(registry).up == 1.0
    messages = [r.getMessage() for r in caplog.records
                if r.name == "exporter.collectors.gpu" and r.levelno >= logging.INFO]
    assert len(messages) == 3, messages
    assert "initialised" in messages[0]
    assert "failing" in messages[1] and "Unknown" in messages[1]
    assert "recovered" in messages[2]


# --- the real library on this machine ---------------------------------------------


def test_real_nvml_on_this_machine():
    """No injection: "no GPU" here (up 1, devices 0), up with samples where a GPU exists."""
    try:
        import pynvml
    except ImportError:
        expected_up, expected_errors, devices = 1.0, 0.0, 0
    else:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            absent = exc.value in (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
            expected_up, expected_errors, devices = (1.0, 0.0, 0) if absent else (0.0, 1.0, None)
        else:
            try:
                devices = pynvml.nvmlDeviceGetCount()
            finally:
                pynvml.nvmlShutdown()
            expected_up, expected_errors = 1.0, 0.0
    registry, collector = make()
    scrape = Scrape(registry)
    collector.close()
    assert (scrape.up, scrape.errors) == (expected_up, expected_errors)
    assert scrape.devices == (None if devices is None else float(devices))
    indexes = {dict(labels)["gpu"] for name, labels in scrape.samples
               if name.startswith("clary_gpu_") and name != "clary_gpu_devices"}
    assert indexes == {str(i) for i in range(devices or 0)}
