"""What the GPU collector reads from one NVML device, and how each reading maps to the catalog.

The set follows dcgm-exporter's default counters (etc/default-counters.csv)
where NVML exposes them; DCGM-only fields (XID errors, NVLink bandwidth,
profiling metrics) are left out. A reading is one NVML call (or a few that
only make sense together) turned into samples
``(catalog family, extra label values, value)``, converted to base units
(hertz, joules, bytes per second, ratios 0..1).

Devices differ in what they support: a reading whose call raises
NVML_ERROR_NOT_SUPPORTED (or NVML_ERROR_FUNCTION_NOT_FOUND, a driver older
than the function) is dropped for that device alone; ``read_device`` makes
each reading all-or-nothing, so a half-read reading never shows. Every other
NVML error propagates and fails the scrape of the collector, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

Sample = tuple[str, tuple[str, ...], float]
Reading = Callable[[Any, Any], Iterable[Sample]]

# nvml.h: nvmlClocksEventReason* (the former "throttle reasons"); names are
# the catalog's ``reason`` values, in bit order.
CLOCK_EVENT_REASONS: tuple[tuple[str, int], ...] = (
    ("gpu_idle", 0x1),
    ("applications_clocks_setting", 0x2),
    ("sw_power_cap", 0x4),
    ("hw_slowdown", 0x8),
    ("sync_boost", 0x10),
    ("sw_thermal_slowdown", 0x20),
    ("hw_thermal_slowdown", 0x40),
    ("hw_power_brake_slowdown", 0x80),
    ("display_clock_setting", 0x100),
)
ALL_REASONS = sum(bit for _, bit in CLOCK_EVENT_REASONS)

MHZ = 1e6  # NVML clocks are in MHz
KIB = 1024  # NVML PCIe throughput is in KB/s (1024 bytes, like its other byte sizes)

# nvmlFieldValue_t.valueType -> the member of its value union that holds it.
_FIELD_MEMBERS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


def code(exc: BaseException) -> int | None:
    """NVML error code of an NVMLError (its ``value``), None for anything else."""
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def unsupported(nvml: Any, exc: BaseException) -> bool:
    """The device or driver lacks this reading (drop it), as opposed to a failure."""
    return code(exc) in (nvml.NVML_ERROR_NOT_SUPPORTED, nvml.NVML_ERROR_FUNCTION_NOT_FOUND)


def text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def call_newest(nvml: Any, names: tuple[str, ...], *args: Any) -> Any:
    """Call the first of ``names`` the bindings and the driver have (NVML renames functions)."""
    for name in names[:-1]:
        function = getattr(nvml, name, None)
        if function is None:
            continue
        try:
            return function(*args)
        except Exception as exc:
            if code(exc) != nvml.NVML_ERROR_FUNCTION_NOT_FOUND:
                raise
    return getattr(nvml, names[-1])(*args)


# --- the readings ------------------------------------------------------------


def _utilization(nvml: Any, h: Any) -> Iterator[Sample]:
    rates = nvml.nvmlDeviceGetUtilizationRates(h)
    yield "clary_gpu_utilization_ratio", (), rates.gpu / 100
    yield "clary_gpu_memory_copy_utilization_ratio", (), rates.memory / 100


def _memory(nvml: Any, h: Any) -> Iterator[Sample]:
    info = nvml.nvmlDeviceGetMemoryInfo(h)
    yield "clary_gpu_memory_used_bytes", (), info.used
    yield "clary_gpu_memory_total_bytes", (), info.total


def _memory_temperature(nvml: Any, h: Any) -> Iterator[Sample]:
    """HBM temperature: only a field value in NVML (``NVML_FI_DEV_MEMORY_TEMP``)."""
    (field,) = nvml.nvmlDeviceGetFieldValues(h, [nvml.NVML_FI_DEV_MEMORY_TEMP])
    if field.nvmlReturn != nvml.NVML_SUCCESS:
        raise nvml.NVMLError(field.nvmlReturn)  # per-field status, e.g. NOT_SUPPORTED
    yield "clary_gpu_memory_temperature_celsius", (), getattr(field.value, _FIELD_MEMBERS[field.valueType])


def _clock_event_reasons(nvml: Any, h: Any) -> Iterator[Sample]:
    """The reasons bitmask decoded into one 0/1 sample per reason the device supports."""
    active = call_newest(nvml, ("nvmlDeviceGetCurrentClocksEventReasons",
                                "nvmlDeviceGetCurrentClocksThrottleReasons"), h)
    try:
        supported = call_newest(nvml, ("nvmlDeviceGetSupportedClocksEventReasons",
                                       "nvmlDeviceGetSupportedClocksThrottleReasons"), h)
    except Exception as exc:
        if not unsupported(nvml, exc):
            raise
        supported = ALL_REASONS
    for reason, bit in CLOCK_EVENT_REASONS:
        if supported & bit:
            yield "clary_gpu_clock_event_reason_active", (reason,), float(bool(active & bit))


def _retired_pages(nvml: Any, h: Any) -> Iterator[Sample]:
    """Page retirement (Kepler to Volta): pages retired per cause."""
    for error, cause in (("corrected", nvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS),
                         ("uncorrected", nvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)):
        yield "clary_gpu_retired_pages", (error,), len(nvml.nvmlDeviceGetRetiredPages(h, cause))


def _remapped_rows(nvml: Any, h: Any) -> Iterator[Sample]:
    """Row remapping (Ampere and later), which replaces page retirement."""
    corrected, uncorrected, pending, failed = nvml.nvmlDeviceGetRemappedRows(h)
    yield "clary_gpu_remapped_rows", ("corrected",), corrected
    yield "clary_gpu_remapped_rows", ("uncorrected",), uncorrected
    yield "clary_gpu_row_remap_pending", (), float(bool(pending))
    yield "clary_gpu_row_remap_failed", (), float(bool(failed))


def _scalar(family: str, read: Callable[[Any, Any], float]) -> Reading:
    def reading(nvml: Any, h: Any) -> Iterator[Sample]:
        yield family, (), read(nvml, h)

    return reading


def _ecc(error: str, scope: str) -> Reading:
    """One ECC counter: each (error, scope) pair is its own NVML call."""

    def reading(nvml: Any, h: Any) -> Iterator[Sample]:
        error_type = getattr(nvml, f"NVML_MEMORY_ERROR_TYPE_{error.upper()}")
        counter = getattr(nvml, f"NVML_{scope.upper()}_ECC")
        yield "clary_gpu_ecc_errors_total", (error, scope), nvml.nvmlDeviceGetTotalEccErrors(h, error_type, counter)

    return reading


DEVICE_READINGS: tuple[Reading, ...] = (
    _utilization,
    _memory,
    _scalar("clary_gpu_temperature_celsius", lambda n, h: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)),
    _memory_temperature,
    _scalar("clary_gpu_power_watts", lambda n, h: n.nvmlDeviceGetPowerUsage(h) / 1000),
    _scalar("clary_gpu_energy_joules_total", lambda n, h: n.nvmlDeviceGetTotalEnergyConsumption(h) / 1000),
    _scalar("clary_gpu_sm_clock_hertz", lambda n, h: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM) * MHZ),
    _scalar("clary_gpu_memory_clock_hertz", lambda n, h: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM) * MHZ),
    _clock_event_reasons,
    _scalar("clary_gpu_pcie_transmitted_bytes_per_second",
            lambda n, h: n.nvmlDeviceGetPcieThroughput(h, n.NVML_PCIE_UTIL_TX_BYTES) * KIB),
    _scalar("clary_gpu_pcie_received_bytes_per_second",
            lambda n, h: n.nvmlDeviceGetPcieThroughput(h, n.NVML_PCIE_UTIL_RX_BYTES) * KIB),
    _scalar("clary_gpu_pcie_replays_total", lambda n, h: n.nvmlDeviceGetPcieReplayCounter(h)),
    _scalar("clary_gpu_encoder_utilization_ratio", lambda n, h: n.nvmlDeviceGetEncoderUtilization(h)[0] / 100),
    _scalar("clary_gpu_decoder_utilization_ratio", lambda n, h: n.nvmlDeviceGetDecoderUtilization(h)[0] / 100),
    *(_ecc(error, scope) for error in ("corrected", "uncorrected") for scope in ("volatile", "aggregate")),
    _retired_pages,
    _scalar("clary_gpu_retired_pages_pending",
            lambda n, h: float(n.nvmlDeviceGetRetiredPagesPendingStatus(h) == n.NVML_FEATURE_ENABLED)),
    _remapped_rows,
)


def read_device(nvml: Any, handle: Any, readings: Iterable[Reading] = DEVICE_READINGS) -> list[Sample]:
    """Every supported reading of one device; a reading the device lacks is left out whole."""
    samples: list[Sample] = []
    for reading in readings:
        try:
            samples.extend(list(reading(nvml, handle)))
        except Exception as exc:
            if not unsupported(nvml, exc):
                raise
    return samples


# --- MIG -------------------------------------------------------------------------


@dataclass(frozen=True)
class MigDevice:
    """One MIG device of a GPU: its identity and the memory it was given."""

    gpu_instance_id: str
    compute_instance_id: str
    profile: str
    uuid: str
    memory: Any  # nvmlMemory_t, or None where the MIG device does not report it


def mig_devices(nvml: Any, handle: Any) -> list[MigDevice]:
    """The MIG devices of a GPU in MIG mode; [] on a GPU without MIG or with MIG off."""
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except Exception as exc:
        if unsupported(nvml, exc):
            return []
        raise
    if current != nvml.NVML_DEVICE_MIG_ENABLE:
        return []
    found = []
    for index in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
        except Exception as exc:
            if code(exc) == nvml.NVML_ERROR_NOT_FOUND:
                continue  # an empty slot
            raise
        try:
            memory = nvml.nvmlDeviceGetMemoryInfo(mig)
        except Exception as exc:
            if not unsupported(nvml, exc):
                raise
            memory = None
        found.append(MigDevice(
            str(nvml.nvmlDeviceGetGpuInstanceId(mig)),
            str(nvml.nvmlDeviceGetComputeInstanceId(mig)),
            mig_profile(text(nvml.nvmlDeviceGetName(mig))),
            text(nvml.nvmlDeviceGetUUID(mig)),
            memory,
        ))
    return found


def mig_profile(name: str) -> str:
    """``NVIDIA A100-SXM4-40GB MIG 1g.5gb`` -> ``1g.5gb``: NVML names MIG devices by profile."""
    _, sep, profile = name.rpartition("MIG ")
    return profile.strip() if sep and profile.strip() else name
